// The live graph -> API prompt, by the rules of ComfyUI's editor (PROTOCOL.md 6.5):
// widget values by name (editor-only widgets left out), links resolved upstream
// through Reroutes and bypassed nodes, muted and virtual nodes left out, and links
// from nodes that are not in the prompt dropped. The same rules as graph/workflow.py,
// which the tests hold this against.

const MUTED = 2;
const BYPASSED = 4;

/** Whether two socket types may connect ("*" and "" match anything; "A,B" is a union). */
export function typesCompatible(a, b) {
  if (!a || !b || a === "*" || b === "*") return true;
  const left = String(a).toLowerCase().split(",");
  const right = String(b).toLowerCase().split(",");
  return left.some((x) => right.includes(x));
}

/**
 * The input of a bypassed node that stands in for its output `slot`, for a consumer
 * wanting `want` (PROTOCOL.md 6.5): same index if compatible, else the first exact type
 * match, else the first compatible input.
 */
function bypassInput(node, slot, want) {
  const inputs = node.inputs ?? [];
  if (!want || want === "*") return inputs[slot] ? slot : inputs.length ? 0 : null;
  const outType = node.outputs?.[slot]?.type;
  const candidate = inputs[slot];
  if (candidate && typesCompatible(candidate.type, outType) && typesCompatible(candidate.type, want)) return slot;
  const exact = inputs.findIndex((input) => input.type === want);
  if (exact >= 0) return exact;
  const loose = inputs.findIndex((input) => typesCompatible(input.type, outType) && typesCompatible(input.type, want));
  return loose >= 0 ? loose : null;
}

/**
 * Follow the link into `node.inputs[index]` to the real node output that feeds it.
 * @returns {{node: object, slot: number} | null} null when nothing (resolvable) is connected
 */
export function resolveInput(graph, node, index) {
  const want = node.inputs[index]?.type;
  let linkId = node.inputs[index]?.link;
  const seen = new Set();
  while (linkId != null) {
    if (seen.has(linkId)) throw new Error(`a cycle of reroutes or bypassed nodes at node ${node.id}`);
    seen.add(linkId);
    const link = graph.links.get ? graph.links.get(linkId) : graph.links[linkId];
    if (!link) return null;
    const origin = graph.getNodeById(link.origin_id);
    if (!origin) return null;
    if (origin.mode === BYPASSED) {
      const through = bypassInput(origin, link.origin_slot, want);
      if (through == null) return null;
      linkId = origin.inputs[through]?.link;
    } else if (origin.isVirtualNode) {
      linkId = origin.inputs?.[link.origin_slot]?.link ?? origin.inputs?.[0]?.link;
    } else {
      return { node: origin, slot: link.origin_slot };
    }
  }
  return null;
}

/**
 * Expand a dynamic prompt: strip comments, then replace each `{a|b|c}` with one option
 * (nested braces work; a backslash escapes the next character and is kept), as the
 * editor does for `dynamicPrompts` text inputs.
 */
export function expandDynamicPrompt(text, random = Math.random) {
  const stripped = String(text).replace(/\/\*[\s\S]*?\*\//g, "").replace(/\/\/[^\n]*\n?/g, "\n");
  let depth = 0;
  let hasBraces = false;
  for (let i = 0; i < stripped.length; i++) {
    if (stripped[i] === "\\") i++;
    else if (stripped[i] === "{") (depth++, (hasBraces = true));
    else if (stripped[i] === "}") depth--;
  }
  if (!hasBraces || depth !== 0) return stripped === String(text) ? text : stripped.trim();
  return expandBraces(stripped, random).trim();
}

function expandBraces(text, random) {
  let out = "";
  for (let i = 0; i < text.length; i++) {
    const char = text[i];
    if (char === "\\") {
      out += char + (text[i + 1] ?? "");
      i++;
    } else if (char === "{") {
      let depth = 1;
      let j = i + 1;
      const options = [];
      let start = j;
      for (; j < text.length && depth > 0; j++) {
        if (text[j] === "\\") j++;
        else if (text[j] === "{") depth++;
        else if (text[j] === "}") depth--;
        else if (text[j] === "|" && depth === 1) {
          options.push(text.slice(start, j));
          start = j + 1;
        }
      }
      options.push(text.slice(start, j - 1));
      out += expandBraces(options[Math.floor(random() * options.length)], random);
      i = j - 1;
    } else {
      out += char;
    }
  }
  return out;
}

/** `%date:yyyy-MM-dd%` and `%Node name.widget%` in a save node's filename_prefix (PROTOCOL.md 7.2). */
export function applyTextReplacements(graph, value, now = new Date()) {
  return String(value).replace(/%([^%]+)%/g, (match, body) => {
    if (body.startsWith("date:")) return formatDate(body.slice(5), now);
    const dot = body.lastIndexOf(".");
    if (dot < 0) return match;
    const [nodeName, widgetName] = [body.slice(0, dot), body.slice(dot + 1)];
    const nodes = graph._nodes ?? graph.nodes ?? [];
    const node =
      nodes.find((n) => n.properties?.["Node name for S&R"] === nodeName) ?? nodes.find((n) => n.title === nodeName);
    const widget = node?.widgets?.find((w) => w.name === widgetName);
    if (!widget) return match;
    return String(widget.value).replace(/[/?<>\\:*|"\x00-\x1f\x7f]/g, "_");
  });
}

function formatDate(format, now) {
  const pad = (n) => String(n).padStart(2, "0");
  const parts = {
    yyyy: String(now.getFullYear()),
    yy: String(now.getFullYear()).slice(-2),
    MM: pad(now.getMonth() + 1),
    M: String(now.getMonth() + 1),
    dd: pad(now.getDate()),
    d: String(now.getDate()),
    hh: pad(now.getHours()),
    h: String(now.getHours()),
    mm: pad(now.getMinutes()),
    m: String(now.getMinutes()),
    ss: pad(now.getSeconds()),
    s: String(now.getSeconds()),
  };
  return format.replace(/yyyy|yy|MM|M|dd|d|hh|h|mm|m|ss|s/g, (token) => parts[token]);
}

const SAVE_NODES = new Set(["SaveImage", "SaveAnimatedWEBP", "SaveAnimatedPNG", "SaveLatent", "CheckpointSave"]);

/**
 * Convert the graph: `{workflow, output}`, where `workflow` is the 0.4 UI JSON to save
 * (and send as extra_pnginfo) and `output` the API prompt.
 * @param {object} graph a LGraph
 * @param {{random?: Function}} options `random` drives dynamic prompts (tests pin it)
 */
export function graphToPrompt(graph, { random = Math.random } = {}) {
  const workflow = graph.serialize({ sortNodes: true });
  const output = {};
  for (const node of graph._nodes) {
    if (node.isVirtualNode || node.mode === MUTED || node.mode === BYPASSED || !node.comfyClass) continue;
    const inputs = {};
    for (const widget of node.widgets ?? []) {
      if (!widget.name || widget.options?.serialize === false || widget.serialize === false) continue;
      let value = widget.value;
      if (widget.dynamicPrompts && typeof value === "string") value = expandDynamicPrompt(value, random);
      if (widget.name === "filename_prefix" && SAVE_NODES.has(node.comfyClass)) {
        value = applyTextReplacements(graph, value);
      }
      inputs[widget.name] = Array.isArray(value) ? { __value__: value } : value;
    }
    (node.inputs ?? []).forEach((input, index) => {
      const origin = resolveInput(graph, node, index);
      if (origin) inputs[input.name] = [String(origin.node.id), origin.slot];
    });
    output[String(node.id)] = { inputs, class_type: node.comfyClass, _meta: { title: node.title } };
  }
  for (const call of Object.values(output)) {
    for (const [name, value] of Object.entries(call.inputs)) {
      if (Array.isArray(value) && value.length === 2 && !(value[0] in output)) delete call.inputs[name];
    }
  }
  return { workflow, output };
}
