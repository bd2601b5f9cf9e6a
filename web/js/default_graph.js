// The txt2img workflow shown on first open, in UI format 0.4 (PROTOCOL.md 6.7 gives the
// ids, links and widget layout ComfyUI users know; positions are ours, and the size, prompt
// and cfg suit the shipped demo model: 64x64, a caption it was trained on, cfg 5).

/**
 * The default workflow for a checkpoint file name.
 * @param {string} ckptName first file of the checkpoints list ("" when there is none)
 */
export function defaultWorkflow(ckptName) {
  const node = (id, type, pos, size, inputs, outputs, widgets, order) => ({
    id,
    type,
    pos,
    size,
    flags: {},
    order,
    mode: 0,
    inputs,
    outputs,
    properties: { "Node name for S&R": type },
    ...(widgets ? { widgets_values: widgets } : {}),
  });
  const input = (name, type, link) => ({ name, type, link });
  const output = (name, type, links, slot) => ({ name, type, links, slot_index: slot });
  return {
    last_node_id: 9,
    last_link_id: 9,
    nodes: [
      node(4, "CheckpointLoaderSimple", [30, 200], [320, 100], [],
        [output("MODEL", "MODEL", [1], 0), output("CLIP", "CLIP", [3, 5], 1), output("VAE", "VAE", [8], 2)],
        [ckptName], 0),
      node(6, "CLIPTextEncode", [400, 60], [420, 160], [input("clip", "CLIP", 3)],
        [output("CONDITIONING", "CONDITIONING", [4], 0)],
        ["a red circle on a blue background"], 1),
      node(7, "CLIPTextEncode", [400, 270], [420, 160], [input("clip", "CLIP", 5)],
        [output("CONDITIONING", "CONDITIONING", [6], 0)],
        [""], 2),
      node(5, "EmptyLatentImage", [460, 480], [320, 110], [],
        [output("LATENT", "LATENT", [2], 0)], [64, 64, 1], 3),
      node(3, "KSampler", [880, 60], [320, 270],
        [input("model", "MODEL", 1), input("positive", "CONDITIONING", 4), input("negative", "CONDITIONING", 6),
          input("latent_image", "LATENT", 2)],
        [output("LATENT", "LATENT", [7], 0)],
        [156680208700286, "randomize", 20, 5, "euler", "normal", 1], 4),
      node(8, "VAEDecode", [1240, 60], [220, 50], [input("samples", "LATENT", 7), input("vae", "VAE", 8)],
        [output("IMAGE", "IMAGE", [9], 0)], null, 5),
      node(9, "SaveImage", [1240, 160], [380, 420], [input("images", "IMAGE", 9)], [], ["ComfyUI"], 6),
    ],
    links: [
      [1, 4, 0, 3, 0, "MODEL"],
      [2, 5, 0, 3, 3, "LATENT"],
      [3, 4, 1, 6, 0, "CLIP"],
      [4, 6, 0, 3, 1, "CONDITIONING"],
      [5, 4, 1, 7, 0, "CLIP"],
      [6, 7, 0, 3, 2, "CONDITIONING"],
      [7, 3, 0, 8, 0, "LATENT"],
      [8, 4, 2, 8, 1, "VAE"],
      [9, 8, 0, 9, 0, "IMAGE"],
    ],
    groups: [],
    config: {},
    extra: { ds: { scale: 0.8, offset: [20, 40] } },
    version: 0.4,
  };
}
