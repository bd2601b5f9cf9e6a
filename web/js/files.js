// Workflow files: reading the text chunks of a PNG written by SaveImage (PROTOCOL.md 7.1),
// telling UI workflows from API prompts, and saving JSON downloads.

const PNG_SIGNATURE = [137, 80, 78, 71, 13, 10, 26, 10];

/** Inflate zlib data (zTXt/compressed iTXt) with the browser's own DecompressionStream. */
async function inflate(bytes) {
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/**
 * The text chunks (tEXt, zTXt, iTXt) of a PNG as `{keyword: text}`.
 * @param {ArrayBuffer} buffer the file's bytes
 * @throws {Error} when the bytes are not a PNG
 */
export async function pngTextChunks(buffer) {
  const bytes = new Uint8Array(buffer);
  if (!PNG_SIGNATURE.every((b, i) => bytes[i] === b)) throw new Error("not a PNG file");
  const view = new DataView(buffer);
  const latin1 = new TextDecoder("latin1");
  const utf8 = new TextDecoder("utf-8");
  const chunks = {};
  let offset = 8;
  while (offset + 8 <= bytes.length) {
    const length = view.getUint32(offset);
    const type = latin1.decode(bytes.subarray(offset + 4, offset + 8));
    const body = bytes.subarray(offset + 8, offset + 8 + length);
    offset += 12 + length;
    if (type === "IEND") break;
    const zero = body.indexOf(0);
    if (zero < 0) continue;
    const keyword = latin1.decode(body.subarray(0, zero));
    if (type === "tEXt") {
      // ComfyUI writes JSON with non-ASCII escaped, but other tools may write UTF-8 here
      chunks[keyword] = utf8.decode(body.subarray(zero + 1));
    } else if (type === "zTXt") {
      chunks[keyword] = latin1.decode(await inflate(body.subarray(zero + 2)));
    } else if (type === "iTXt") {
      const compressed = body[zero + 1] === 1;
      let rest = body.subarray(zero + 3);
      rest = rest.subarray(rest.indexOf(0) + 1); // language tag
      rest = rest.subarray(rest.indexOf(0) + 1); // translated keyword
      chunks[keyword] = utf8.decode(compressed ? await inflate(rest) : rest);
    }
  }
  return chunks;
}

/** Whether JSON data is a UI workflow (nodes + links) rather than an API prompt. */
export function isUiWorkflow(data) {
  return Boolean(data) && typeof data === "object" && Array.isArray(data.nodes);
}

/** Whether JSON data looks like an API prompt: `{id: {class_type, inputs}}`. */
export function isApiPrompt(data) {
  if (!data || typeof data !== "object" || Array.isArray(data)) return false;
  const values = Object.values(data);
  return values.length > 0 && values.every((v) => v && typeof v === "object" && typeof v.class_type === "string");
}

/**
 * What a dropped or opened file holds: `{workflow}` (UI JSON) or `{prompt}` (API JSON).
 * A PNG's `workflow` chunk wins over its `prompt` chunk, as in ComfyUI's editor.
 * @throws {Error} with a message for the user when the file holds neither
 */
export async function readWorkflowFile(file) {
  const buffer = await file.arrayBuffer();
  const isPng = file.type === "image/png" || /\.png$/i.test(file.name);
  if (isPng) {
    const chunks = await pngTextChunks(buffer);
    if (chunks.workflow) {
      const workflow = JSON.parse(chunks.workflow);
      if (isUiWorkflow(workflow)) return { workflow };
    }
    if (chunks.prompt) {
      const prompt = JSON.parse(chunks.prompt);
      if (isApiPrompt(prompt)) return { prompt };
    }
    throw new Error(`${file.name}: this PNG carries no workflow`);
  }
  let data;
  try {
    data = JSON.parse(new TextDecoder().decode(buffer));
  } catch {
    throw new Error(`${file.name}: not a PNG or JSON workflow`);
  }
  if (isUiWorkflow(data)) return { workflow: data };
  if (isUiWorkflow(data?.workflow)) return { workflow: data.workflow };
  if (isApiPrompt(data)) return { prompt: data };
  if (isApiPrompt(data?.prompt)) return { prompt: data.prompt };
  throw new Error(`${file.name}: neither a UI workflow nor an API prompt`);
}

/** Offer `data` as a JSON file download. */
export function downloadJSON(data, filename) {
  const blob = new Blob([JSON.stringify(data, null, 2)], { type: "application/json" });
  const url = URL.createObjectURL(blob);
  const anchor = Object.assign(document.createElement("a"), { href: url, download: filename });
  document.body.append(anchor);
  anchor.click();
  anchor.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

/** Let the user pick a file; resolves to the File (or null when cancelled). */
export function pickFile(accept) {
  return new Promise((resolve) => {
    const input = Object.assign(document.createElement("input"), { type: "file", accept });
    input.style.display = "none";
    input.addEventListener("change", () => {
      resolve(input.files?.[0] ?? null);
      input.remove();
    });
    input.addEventListener("cancel", () => {
      resolve(null);
      input.remove();
    });
    document.body.append(input);
    input.click();
  });
}
