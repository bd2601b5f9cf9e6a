// The editor: one canvas, one graph, the toolbar, and the glue between them and the server.

import { bindDrop, bindKeys, bindToolbar, bindTooltips } from "./bindings.js";
import { defaultWorkflow } from "./default_graph.js";
import { ExecutionView } from "./execution_view.js";
import { downloadJSON, pickFile, readWorkflowFile } from "./files.js";
import { definitionInputs, registerNodeTypes, TYPE_COLORS } from "./node_types.js";
import { graphToPrompt } from "./prompt.js";
import { loadPromptIntoGraph } from "./prompt_loader.js";
import { QueuePanel } from "./queue_panel.js";
import { buildPalette, SearchBox } from "./search.js";
import { applyControl, isWidgetInput, parseInputSpec } from "./widgets.js";

const STORAGE_KEY = "noodlebox.workflow";
const VIRTUAL_DEFS = [
  { name: "Reroute", display_name: "Reroute", category: "utils", description: "Passes a link through; not sent to the server.", input: { required: { "": ["*"] } }, output: ["*"] },
  { name: "Note", display_name: "Note", category: "utils", description: "A text note on the canvas; not sent to the server.", input: {}, output: [] },
];

export class App {
  /**
   * @param {object} lib the litegraph ES module
   * @param {object} api an Api
   * @param {object} elements `{canvas, palette, queuePanel, status, batch}` DOM elements
   */
  constructor(lib, api, elements) {
    this.lib = lib;
    this.api = api;
    this.elements = elements;
    this.defs = {};
    this.graph = null;
    this.canvas = null;
    this.view = new ExecutionView(api, () => this.graph, (text, kind) => this.notify(text, kind));
    this.search = new SearchBox(() => this.allDefs(), (def, ctx) => this.addNode(def.name, ctx.pos, ctx.link));
    this.queuePanel = new QueuePanel(elements.queuePanel, api, (workflow) => this.loadWorkflow(workflow));
    this.lastSaved = null;
  }

  /** Node definitions from the server plus the editor-only ones. */
  allDefs() {
    return [...Object.values(this.defs), ...VIRTUAL_DEFS];
  }

  /** Load the node definitions, build the canvas, restore or create a workflow, connect. */
  async start() {
    const { LiteGraph, LGraph, LGraphCanvas } = this.lib;
    this.defs = await this.api.getObjectInfo();
    Object.assign(LGraphCanvas.link_type_colors, TYPE_COLORS);
    LiteGraph.release_link_on_empty_shows_menu = true;
    registerNodeTypes(this.lib, this.defs, this.#nodeHooks());
    this.graph = new LGraph();
    this.canvas = new LGraphCanvas(this.elements.canvas, this.graph);
    this.canvas.show_info = false;
    this.canvas.render_canvas_border = false;
    // Double-click on empty canvas opens the search from the browser's own dblclick event (its
    // timing follows the system's setting); litegraph still asks for it when a link is dropped.
    this.canvas.showSearchBox = (event, options) => {
      if (options) this.#openSearch(event, options);
    };
    this.elements.canvas.addEventListener("dblclick", (event) => {
      const [x, y] = this.canvas.convertEventToCanvasOffset(event);
      if (!this.nodeAt(x, y) && !this.graph.getGroupOnPos?.(x, y)) this.#openSearch(event);
    });
    this.canvas.showConnectionMenu = (options) => this.#openSearch(options.e, {
      node_from: options.nodeFrom, slot_from: options.slotFrom, node_to: options.nodeTo, slot_to: options.slotTo,
    });
    this.#fitCanvas();
    window.addEventListener("resize", () => this.#fitCanvas());
    buildPalette(this.elements.palette, this.allDefs(), (def) => this.addNode(def.name));
    this.notify(`Ready: ${Object.keys(this.defs).length} node types. Double-click the canvas to add a node.`);
    this.#restore();
    bindToolbar(this);
    bindKeys(this);
    bindDrop(this);
    bindTooltips(this);
    this.api.addEventListener("status", (event) => {
      const remaining = event.detail?.status?.exec_info?.queue_remaining;
      if (remaining !== undefined) this.elements.queueSize.textContent = `Queue: ${remaining}`;
      this.queuePanel.refresh();
    });
    this.api.addEventListener("executing", (event) => {
      if (event.detail?.node == null) this.queuePanel.refresh(); // the prompt is done and in the history
    });
    this.api.connect();
    this.queuePanel.refresh();
    setInterval(() => this.persist(), 1000);
    window.addEventListener("beforeunload", () => this.persist());
  }

  /** The callbacks node types use for editing, uploading, menus and drawing. */
  #nodeHooks() {
    return {
      editText: (node, widget, event, canvas, onChange) => {
        (canvas ?? this.canvas).prompt(widget.name, widget.value ?? "", (value) => {
          widget.value = value;
          onChange();
          this.graph.setDirtyCanvas(true, true);
        }, event, true);
      },
      upload: async (node, widget) => {
        const file = await pickFile("image/*");
        if (file) await this.uploadInto(node, widget, file);
      },
      drawNode: (node, ctx, canvas) => this.view.drawNode(node, ctx, canvas),
      nodeMenu: (node, options) => this.#widgetInputMenu(node, options),
      configured: (node) => this.#showInputImage(node),
      widgetEdited: (node, widget) => {
        if (widget.uploadWidget) this.#showInputImage(node);
        this.graph.setDirtyCanvas(true, true); // menus and dialogs change values outside a canvas event
      },
    };
  }

  #fitCanvas() {
    const element = this.elements.canvas;
    const rect = element.parentElement.getBoundingClientRect();
    element.width = Math.max(rect.width, 100);
    element.height = Math.max(rect.height, 100);
    this.canvas.setDirty(true, true);
  }

  /** The graph position under the client coordinates of an event (or the view centre). */
  canvasPosition(event) {
    if (event && "clientX" in event) return this.canvas.convertEventToCanvasOffset(event);
    const element = this.elements.canvas;
    return this.canvas.ds.convertCanvasToOffset([element.width / 2, element.height / 2]);
  }

  /**
   * The top node at graph position (x, y). litegraph hit-tests against the areas it measured
   * when it last drew a frame, so a node added, moved or resized since (a drop or double-click
   * in that same frame) would be missed: the areas are measured again first.
   */
  nodeAt(x, y) {
    for (const node of this.graph._nodes) node.updateArea(this.canvas.ctx);
    return this.graph.getNodeOnPos(x, y);
  }

  /** Client (page) coordinates of a graph position: what a mouse must point at. */
  toClient([x, y]) {
    const rect = this.elements.canvas.getBoundingClientRect();
    const [cx, cy] = this.canvas.ds.convertOffsetToCanvas([x, y]);
    return [rect.left + cx, rect.top + cy];
  }

  #openSearch(event, options = {}) {
    const pos = this.canvasPosition(event);
    const x = event?.clientX ?? window.innerWidth / 2;
    const y = event?.clientY ?? window.innerHeight / 3;
    let link = null;
    let typeFilter = null;
    if (options.node_from && options.slot_from) {
      link = { from: options.node_from, slot: options.slot_from };
      typeFilter = options.slot_from.type;
    } else if (options.node_to && options.slot_to) {
      link = { to: options.node_to, slot: options.slot_to };
      typeFilter = options.slot_to.type;
    }
    this.search.open(x, y, { pos, link, typeFilter: typeFilter === "*" ? null : typeFilter });
  }

  /**
   * Add a node of `type` at graph position `pos` (default: the view centre); with `link`,
   * connect it to the socket a link was dragged from.
   */
  addNode(type, pos = null, link = null) {
    const node = this.lib.LiteGraph.createNode(type);
    if (!node) {
      this.notify(`unknown node type ${type}`, "error");
      return null;
    }
    const [x, y] = pos ?? this.canvasPosition(null);
    node.pos = [x, y];
    this.graph.add(node);
    if (link?.from) {
      const index = node.inputs?.findIndex((input) => this.lib.LiteGraph.isValidConnection(link.slot.type, input.type));
      const outIndex = link.from.outputs.indexOf(link.slot);
      if (index >= 0 && outIndex >= 0) link.from.connect(outIndex, node, index);
    } else if (link?.to) {
      const index = node.outputs?.findIndex((output) => this.lib.LiteGraph.isValidConnection(output.type, link.slot.type));
      const inIndex = link.to.inputs.indexOf(link.slot);
      if (index >= 0 && inIndex >= 0) node.connect(index, link.to, inIndex);
    }
    this.canvas.selectNode(node);
    // drawn at once rather than at the next animation frame: litegraph's mouse handling hit-tests
    // the nodes of the last drawn frame, so a click on the new node before then would miss it
    this.canvas.draw(true, true);
    return node;
  }

  /** Replace the canvas with a UI workflow (0.4 or 1); unknown node types are reported. */
  loadWorkflow(workflow) {
    const missing = [...new Set((workflow.nodes ?? []).map((n) => n.type))].filter(
      (type) => !this.lib.LiteGraph.registered_node_types[type],
    );
    this.view.outputs = {};
    this.view.errors = {};
    this.graph.clear();
    this.graph.configure(structuredClone(workflow));
    const ds = workflow.extra?.ds;
    if (ds?.offset && ds?.scale) {
      this.canvas.ds.offset = [...ds.offset];
      this.canvas.ds.scale = ds.scale;
    }
    this.graph.setDirtyCanvas(true, true);
    if (missing.length) this.notify(`Missing node types: ${missing.join(", ")}`, "error");
    this.persist();
  }

  /** Build a graph from an API prompt (laid out in columns by depth; it has no positions). */
  loadApiPrompt(prompt) {
    const convert = (node, name) => this.#convertToInput(node, name);
    const unknown = loadPromptIntoGraph(this.lib.LiteGraph, this.graph, prompt, convert);
    if (unknown.length) this.notify(`Missing node types: ${unknown.join(", ")}`, "error");
    this.persist();
  }

  /** Load what a dropped or picked file holds. */
  async openFile(file) {
    try {
      const { workflow, prompt } = await readWorkflowFile(file);
      if (workflow) this.loadWorkflow(workflow);
      else this.loadApiPrompt(prompt);
      this.notify(`Loaded ${file.name}`);
    } catch (error) {
      this.notify(error.message, "error");
    }
  }

  /** Upload an image file and select it in an image_upload combo. */
  async uploadInto(node, widget, file) {
    try {
      const saved = await this.api.uploadImage(file);
      const name = saved.subfolder ? `${saved.subfolder}/${saved.name}` : saved.name;
      if (!widget.options.values.includes(name)) widget.options.values.push(name);
      widget.value = name;
      this.#showInputImage(node);
      this.notify(`Uploaded ${name}`);
    } catch (error) {
      this.notify(error.message, "error");
    }
  }

  #showInputImage(node) {
    const widget = node.widgets?.find((w) => w.uploadWidget);
    if (!widget?.value) return;
    const [subfolder, filename] = widget.value.includes("/")
      ? [widget.value.slice(0, widget.value.lastIndexOf("/")), widget.value.slice(widget.value.lastIndexOf("/") + 1)]
      : ["", widget.value];
    const img = new Image();
    img.onload = () => this.graph?.setDirtyCanvas(true, true);
    img.src = this.api.viewURL({ filename, subfolder, type: "input" });
    node.imgs = [img];
    if (node.size[1] < 300) node.setSize([Math.max(node.size[0], 260), 300]);
  }

  /**
   * Menu entries turning a widget into an input socket and back (ComfyUI's "widget inputs").
   * litegraph's own "Convert to Subgraph" entry is taken out of `options`: the editor's
   * conversion to a prompt does not flatten subgraphs.
   */
  #widgetInputMenu(node, options) {
    const subgraph = options.findIndex((entry) => entry?.content?.startsWith("Convert to Subgraph"));
    if (subgraph >= 0) options.splice(subgraph, 1);
    const def = this.defs[node.comfyClass];
    if (!def) return [];
    const entries = [];
    for (const { name, spec } of definitionInputs(def)) {
      if (!isWidgetInput(spec)) continue;
      const index = node.inputs.findIndex((input) => input.widget?.name === name);
      if (index < 0) {
        entries.push({ content: `Convert ${name} to input`, callback: () => this.#convertToInput(node, name) });
      } else if (node.inputs[index].link == null) {
        entries.push({ content: `Convert ${name} to widget`, callback: () => node.removeInput(index) });
      }
    }
    return entries;
  }

  #convertToInput(node, name) {
    const def = this.defs[node.comfyClass];
    const spec = definitionInputs(def ?? {}).find((input) => input.name === name)?.spec;
    if (!spec) return -1;
    const { type } = parseInputSpec(spec);
    node.addInput(name, type, { widget: { name } });
    this.graph.setDirtyCanvas(true, true);
    return node.inputs.length - 1;
  }

  /**
   * Queue the graph `count` times (the batch count). Each queued prompt is converted
   * anew, so seeds set to randomize/increment differ between them.
   * @returns {Promise<string[]>} the accepted prompt ids
   */
  async queue(count = Number(this.elements.batch.value) || 1, front = false) {
    const ids = [];
    this.view.clearErrors();
    for (let i = 0; i < count; i++) {
      let converted;
      try {
        converted = graphToPrompt(this.graph);
      } catch (error) {
        this.notify(error.message, "error");
        break;
      }
      const result = await this.api.queuePrompt(converted.output, converted.workflow, { front });
      if (!result.ok) {
        this.view.showValidationErrors(result.body);
        break;
      }
      ids.push(result.body.prompt_id);
      for (const node of this.graph._nodes) {
        for (const widget of node.widgets ?? []) applyControl(widget);
      }
      this.graph.setDirtyCanvas(true, true);
    }
    if (ids.length) this.notify(`Queued ${ids.length} prompt${ids.length > 1 ? "s" : ""}`);
    this.queuePanel.refresh();
    this.persist();
    return ids;
  }

  /** The graph as `{workflow, output}`: the UI JSON (0.4) and the API prompt it queues. */
  convert() {
    return graphToPrompt(this.graph);
  }

  /** Save the workflow as a UI JSON download (ComfyUI 0.4 format). */
  saveWorkflow() {
    downloadJSON(this.graph.serialize({ sortNodes: true }), "workflow.json");
  }

  /** Save the API prompt of the graph as a download. */
  exportApi() {
    downloadJSON(graphToPrompt(this.graph).output, "workflow_api.json");
  }

  /** Keep the workflow in local storage (restored on the next visit). */
  persist() {
    if (!this.graph) return;
    const text = JSON.stringify(this.graph.serialize({ sortNodes: true }));
    if (text !== this.lastSaved) {
      localStorage.setItem(STORAGE_KEY, text);
      this.lastSaved = text;
    }
  }

  #restore() {
    const saved = localStorage.getItem(STORAGE_KEY);
    if (saved) {
      try {
        this.loadWorkflow(JSON.parse(saved));
        return;
      } catch (error) {
        console.warn("the saved workflow did not load; showing the default", error);
      }
    }
    this.loadDefault();
  }

  /** Put the default txt2img workflow on the canvas (with the first checkpoint found). */
  loadDefault() {
    const spec = this.defs.CheckpointLoaderSimple?.input?.required?.ckpt_name;
    const choices = spec ? parseInputSpec(spec).choices ?? [] : [];
    this.loadWorkflow(defaultWorkflow(choices[0] ?? ""));
  }

  /** Empty the canvas. */
  clearGraph() {
    this.graph.clear();
    this.view.outputs = {};
    this.graph.setDirtyCanvas(true, true);
    this.persist();
  }

  /** Show a one-line message in the status bar. */
  notify(text, kind = "info") {
    const status = this.elements.status;
    status.textContent = text;
    status.dataset.kind = kind;
    if (kind === "error") console.warn(text);
  }
}
