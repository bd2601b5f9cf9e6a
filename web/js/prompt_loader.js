// An API prompt put on the canvas. It has no positions, so nodes are laid out in columns
// by their depth in the graph; widget values are set by input name and links connected by
// socket name (a linked widget input becomes a socket first).

/** Depth of each node: 0 for nodes with no links in, else one more than the deepest source. */
function depths(prompt) {
  const depth = {};
  const isLink = (v) => Array.isArray(v) && v.length === 2 && String(v[0]) in prompt;
  const visit = (id, seen) => {
    if (depth[id] !== undefined) return depth[id];
    if (seen.has(id)) return 0; // a cycle: the server will refuse it; lay it out anyway
    seen.add(id);
    const sources = Object.values(prompt[id]?.inputs ?? {}).filter(isLink);
    depth[id] = sources.length ? Math.max(...sources.map((v) => visit(String(v[0]), seen) + 1)) : 0;
    return depth[id];
  };
  for (const id of Object.keys(prompt)) visit(id, new Set());
  return depth;
}

/**
 * Fill `graph` (emptied first) from an API prompt.
 * @param {object} LiteGraph litegraph's global (createNode)
 * @param {object} graph the LGraph
 * @param {object} prompt `{id: {class_type, inputs, _meta}}`
 * @param {(node: object, name: string) => number} convertToInput adds a widget-input socket, returns its index
 * @returns {string[]} class types the editor does not know (their nodes are left out)
 */
export function loadPromptIntoGraph(LiteGraph, graph, prompt, convertToInput) {
  graph.clear();
  const depth = depths(prompt);
  const nodes = {};
  const rows = {};
  const unknown = new Set();
  for (const [id, call] of Object.entries(prompt)) {
    const node = LiteGraph.createNode(call.class_type);
    if (!node) {
      unknown.add(call.class_type);
      continue;
    }
    node.id = Number.isNaN(Number(id)) ? id : Number(id);
    const column = depth[id];
    rows[column] = (rows[column] ?? 0) + 1;
    node.pos = [40 + column * 340, 40 + (rows[column] - 1) * 260];
    if (call._meta?.title) node.title = call._meta.title;
    for (const widget of node.widgets ?? []) {
      const value = call.inputs?.[widget.name];
      if (value !== undefined && !(Array.isArray(value) && value.length === 2)) widget.value = value?.__value__ ?? value;
    }
    graph.add(node);
    nodes[id] = node;
  }
  for (const [id, call] of Object.entries(prompt)) {
    const target = nodes[id];
    if (!target) continue;
    for (const [name, value] of Object.entries(call.inputs ?? {})) {
      const source = Array.isArray(value) && value.length === 2 ? nodes[String(value[0])] : null;
      if (!source) continue;
      let slot = target.inputs?.findIndex((input) => input.name === name) ?? -1;
      if (slot < 0) slot = convertToInput(target, name);
      if (slot >= 0) source.connect(value[1], target, slot);
    }
  }
  graph.setDirtyCanvas(true, true);
  return [...unknown];
}
