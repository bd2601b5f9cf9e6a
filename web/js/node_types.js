// Node types registered in litegraph from /object_info (PROTOCOL.md 4), plus the
// editor-only nodes Reroute and Note, which never reach the server (PROTOCOL.md 6.6).

import { addInputWidget, isWidgetInput, parseInputSpec } from "./widgets.js";

/** Slot colours by type, so typed sockets are told apart at a glance (ComfyUI's palette habits). */
export const TYPE_COLORS = {
  MODEL: "#B39DDB",
  CLIP: "#FFD500",
  VAE: "#FF6E6E",
  CONDITIONING: "#FFA931",
  LATENT: "#FF9CF9",
  IMAGE: "#64B5F6",
  MASK: "#81C784",
  INT: "#29699c",
  FLOAT: "#29699c",
  STRING: "#77ff77",
};

const MIN_WIDTH = 240;

/** The inputs of a node definition in input_order: [{name, spec, optional}]. */
export function definitionInputs(def) {
  const inputs = [];
  for (const section of ["required", "optional"]) {
    const specs = def.input?.[section] ?? {};
    const order = def.input_order?.[section] ?? Object.keys(specs);
    for (const name of order) {
      if (specs[name] !== undefined) inputs.push({ name, spec: specs[name], optional: section === "optional" });
    }
  }
  return inputs;
}

/**
 * Register one litegraph node type per node definition.
 * @param {object} lib the litegraph module (LiteGraph, LGraphNode)
 * @param {object} defs `/object_info`
 * @param {object} hooks the app's callbacks (widget editing, upload, drawing)
 */
export function registerNodeTypes(lib, defs, hooks) {
  const { LiteGraph, LGraphNode } = lib;
  for (const def of Object.values(defs)) {
    const NodeClass = class extends LGraphNode {
      constructor(title) {
        super(title ?? def.display_name ?? def.name);
        this.comfyClass = def.name;
        this.serialize_widgets = true;
        buildNode(this, def, hooks);
      }
    };
    NodeClass.title = def.display_name || def.name;
    NodeClass.comfyClass = def.name;
    NodeClass.nodeData = def;
    installHooks(NodeClass, hooks);
    LiteGraph.registerNodeType(def.name, NodeClass);
    NodeClass.category = def.category ?? "";
    NodeClass.description = def.description ?? "";
  }
  registerVirtualNodes(lib, hooks);
}

/** Sockets, widgets and outputs of a new node, from its definition. */
function buildNode(node, def, hooks) {
  for (const { name, spec, optional } of definitionInputs(def)) {
    const { type, options } = parseInputSpec(spec);
    if (isWidgetInput(spec)) {
      addInputWidget(node, name, spec, hooks);
    } else {
      const slot = node.addInput(name, type === "COMBO" ? "COMBO" : type);
      slot.tooltip = options.tooltip;
      if (optional) slot.label = name; // optional sockets are drawn the same; the label keeps the name visible
    }
  }
  (def.output ?? []).forEach((type, index) => {
    const outputType = Array.isArray(type) ? "COMBO" : type;
    const slot = node.addOutput(def.output_name?.[index] ?? outputType, outputType);
    slot.tooltip = def.output_tooltips?.[index];
    if (def.output_is_list?.[index]) slot.shape = 6; // litegraph's GRID shape marks list outputs
  });
  const size = node.computeSize();
  node.size = [Math.max(size[0], MIN_WIDTH), size[1]];
  if (def.output_node) node.size[1] = Math.max(node.size[1], 100);
}

/** Drawing and menu hooks shared by every registered node class. */
function installHooks(NodeClass, hooks) {
  NodeClass.prototype.onDrawForeground = function (ctx, canvas) {
    hooks.drawNode?.(this, ctx, canvas);
  };
  // litegraph puts the returned entries first, above its own
  NodeClass.prototype.getExtraMenuOptions = function (canvas, options) {
    return hooks.nodeMenu?.(this, options) ?? [];
  };
  NodeClass.prototype.onConfigure = function () {
    hooks.configured?.(this);
  };
  NodeClass.prototype.onWidgetEdited = function (widget) {
    hooks.widgetEdited?.(this, widget);
  };
}

/** Reroute (a pass-through dot) and Note (a text box): editor-only, skipped when queueing. */
function registerVirtualNodes(lib, hooks) {
  const { LiteGraph, LGraphNode } = lib;

  class Reroute extends LGraphNode {
    constructor(title) {
      super(title ?? "Reroute");
      this.isVirtualNode = true;
      this.addInput("", "*");
      this.addOutput("", "*");
      this.properties = { showOutputText: false, horizontal: false };
      this.size = [75, 26];
      this.serialize_widgets = true;
    }
  }
  Reroute.title = "Reroute";
  Reroute.collapsable = false;
  LiteGraph.registerNodeType("Reroute", Reroute);
  Reroute.category = "utils";
  Reroute.description = "Passes a link through, to tidy long links; not sent to the server.";

  class Note extends LGraphNode {
    constructor(title) {
      super(title ?? "Note");
      this.isVirtualNode = true;
      this.serialize_widgets = true;
      addInputWidget(this, "text", ["STRING", { multiline: true }], hooks);
      this.color = "#432";
      this.bgcolor = "#653";
      this.size = [300, 130];
    }
  }
  Note.title = "Note";
  LiteGraph.registerNodeType("Note", Note);
  Note.category = "utils";
  Note.description = "A text note on the canvas; not sent to the server.";
  for (const NodeClass of [Reroute, Note]) {
    NodeClass.prototype.onDrawForeground = function (ctx, canvas) {
      hooks.drawNode?.(this, ctx, canvas);
    };
  }
}
