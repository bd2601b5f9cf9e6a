"""A pack that uses ComfyUI's folder_paths module, as many real packs do."""

import os

import folder_paths


class ListLoras:
    @classmethod
    def INPUT_TYPES(s):
        return {"required": {"lora_name": (folder_paths.get_filename_list("loras"),)}}

    RETURN_TYPES = ("STRING",)
    FUNCTION = "resolve"
    CATEGORY = "example/loaders"

    def resolve(self, lora_name):
        return (folder_paths.get_full_path_or_raise("loras", lora_name),)


class SaveText:
    @classmethod
    def INPUT_TYPES(s):
        return {"required": {"text": ("STRING", {"forceInput": True}),
                             "filename_prefix": ("STRING", {"default": "notes/text"})}}

    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "save"

    def save(self, text, filename_prefix):
        folder, filename, counter, subfolder, _ = folder_paths.get_save_image_path(
            filename_prefix, folder_paths.get_output_directory())
        name = f"{filename}_{counter:05}_.txt"
        with open(os.path.join(folder, name), "w") as f:
            f.write(text)
        return {"ui": {"files": [{"filename": name, "subfolder": subfolder, "type": "output"}]}}


NODE_CLASS_MAPPINGS = {"ListLoras": ListLoras, "SaveText": SaveText}
