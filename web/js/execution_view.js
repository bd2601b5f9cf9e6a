// What the server's events show on the nodes (PROTOCOL.md 3): the executing node's
// outline, per-node progress bars, live sampler previews, output images in save and
// preview nodes, and validation or runtime errors on the nodes that have them.

const RUNNING_COLOR = "#0f0";
const ERROR_COLOR = "#f33";
const PROGRESS_COLOR = "#2a2";

export class ExecutionView {
  /**
   * @param {object} api the Api (its events drive this view)
   * @param {() => object} getGraph the current LGraph
   * @param {(message: string, kind?: string) => void} notify shows a status message
   */
  constructor(api, getGraph, notify) {
    this.api = api;
    this.getGraph = getGraph;
    this.notify = notify;
    this.promptId = null;
    this.runningNode = null;
    /** node id -> {value, max} of the current prompt */
    this.progress = {};
    /** node id -> [{message, details, input}] */
    this.errors = {};
    /** node id -> [{filename, subfolder, type}] of the last run */
    this.outputs = {};
    /** every event seen, in order (a log the tests and the status line read) */
    this.log = [];
    this.#listen();
  }

  #listen() {
    const on = (type, handler) => this.api.addEventListener(type, (event) => {
      this.log.push({ type, data: event.detail, at: Date.now() });
      handler(event.detail ?? {});
      this.redraw();
    });
    on("execution_start", ({ prompt_id }) => {
      this.promptId = prompt_id;
      this.progress = {};
      this.errors = {};
    });
    on("execution_cached", ({ nodes = [] }) => {
      for (const id of nodes) this.progress[id] = { value: 1, max: 1, cached: true };
    });
    on("executing", ({ node, display_node }) => {
      const id = display_node ?? node;
      if (this.runningNode != null && this.progress[this.runningNode]) {
        this.progress[this.runningNode].value = this.progress[this.runningNode].max;
      }
      this.runningNode = id ?? null;
      if (id != null) this.progress[id] ??= { value: 0, max: 1 };
      if (id == null) this.promptId = null;
    });
    on("progress", ({ node, value, max }) => {
      if (node != null) this.progress[node] = { value, max };
    });
    on("progress_state", ({ nodes = {} }) => {
      for (const [id, state] of Object.entries(nodes)) {
        const key = state.display_node_id ?? id;
        this.progress[key] = { value: state.value, max: state.max, state: state.state };
      }
    });
    on("executed", ({ node, display_node, output }) => {
      const id = display_node ?? node;
      const images = output?.images ?? [];
      if (images.length) this.#showImages(id, images);
    });
    on("execution_success", () => {
      this.runningNode = null;
    });
    on("execution_interrupted", () => {
      this.runningNode = null;
      this.notify("Interrupted", "warn");
    });
    on("execution_error", (data) => {
      this.runningNode = null;
      if (data.node_id != null) {
        this.errors[data.node_id] = [{ message: data.exception_message, details: data.exception_type, input: null }];
      }
      this.notify(`Error in ${data.node_type ?? "a node"} (#${data.node_id}): ${data.exception_message}`, "error");
    });
    this.api.addEventListener("b_preview", (event) => this.#showPreview(event.detail));
  }

  /** Mark the nodes named in a rejected prompt's `node_errors` (PROTOCOL.md 2.5). */
  showValidationErrors(body) {
    this.errors = {};
    for (const [id, entry] of Object.entries(body.node_errors ?? {})) {
      this.errors[id] = (entry.errors ?? []).map((error) => ({
        message: error.message,
        details: error.details,
        input: error.extra_info?.input_name ?? null,
      }));
    }
    const first = body.error ?? {};
    const count = Object.keys(this.errors).length;
    const where = count ? ` (${count} node${count > 1 ? "s" : ""} marked)` : "";
    this.notify(`Prompt rejected: ${first.message ?? "invalid prompt"}${first.details ? ` – ${first.details}` : ""}${where}`, "error");
    this.redraw();
  }

  /** Forget the marks of earlier runs (before a new queue). */
  clearErrors() {
    this.errors = {};
    this.redraw();
  }

  #node(id) {
    return this.getGraph()?.getNodeById(id) ?? this.getGraph()?.getNodeById(Number(id));
  }

  #showImages(id, images) {
    this.outputs[id] = images;
    const node = this.#node(id);
    if (!node) return;
    node.imgs = images.map((image) => {
      const element = new Image();
      element.onload = () => this.redraw();
      element.src = this.api.viewURL(image) + `&rand=${Math.random()}`;
      return element;
    });
    node.imageSources = images;
    node.isPreview = false;
    ensureImageRoom(node);
  }

  #showPreview({ blob, nodeId }) {
    if (nodeId == null) return;
    const node = this.#node(nodeId);
    if (!node) return;
    const element = new Image();
    element.onload = () => {
      if (node.previewURL) URL.revokeObjectURL(node.previewURL);
      node.previewURL = element.src;
      node.imgs = [element];
      node.isPreview = true;
      ensureImageRoom(node);
      this.redraw();
    };
    element.src = URL.createObjectURL(blob);
  }

  /** Ask the canvas to draw again. */
  redraw() {
    this.getGraph()?.setDirtyCanvas(true, true);
  }

  /** Draw a node's overlay (called from its onDrawForeground, in node coordinates). */
  drawNode(node, ctx) {
    const id = String(node.id);
    const titleHeight = globalThis.LiteGraph?.NODE_TITLE_HEIGHT ?? 30;
    if (node.imgs?.length && !node.flags?.collapsed) drawImages(node, ctx);
    const progress = this.progress[id];
    if (progress && this.promptId && progress.max > 0 && !progress.cached) {
      const fraction = Math.min(Math.max(progress.value / progress.max, 0), 1);
      ctx.fillStyle = PROGRESS_COLOR;
      ctx.fillRect(0, -4, node.size[0] * fraction, 4);
    }
    if (this.runningNode != null && String(this.runningNode) === id) {
      outline(ctx, node, titleHeight, RUNNING_COLOR);
    }
    const errors = this.errors[id];
    if (errors?.length) {
      outline(ctx, node, titleHeight, ERROR_COLOR);
      ctx.fillStyle = ERROR_COLOR;
      ctx.font = "12px sans-serif";
      errors.slice(0, 3).forEach((error, index) => {
        const text = `${error.input ? `${error.input}: ` : ""}${error.message}`;
        ctx.fillText(text.slice(0, 80), 4, node.size[1] + 16 + index * 14);
      });
      for (const error of errors) {
        const slot = node.inputs?.findIndex((input) => input.name === error.input) ?? -1;
        if (slot >= 0) {
          const [x, y] = node.getConnectionPos(true, slot);
          ctx.beginPath();
          ctx.arc(x - node.pos[0], y - node.pos[1], 7, 0, Math.PI * 2);
          ctx.strokeStyle = ERROR_COLOR;
          ctx.lineWidth = 2;
          ctx.stroke();
        }
      }
    }
  }
}

function outline(ctx, node, titleHeight, color) {
  ctx.save();
  ctx.strokeStyle = color;
  ctx.lineWidth = 3;
  ctx.beginPath();
  ctx.roundRect(-3, -titleHeight - 3, node.size[0] + 6, node.size[1] + titleHeight + 6, 8);
  ctx.stroke();
  ctx.restore();
}

/** Where the image area of a node starts: below its widgets and slots. */
function imageTop(node) {
  let top = 10;
  for (const widget of node.widgets ?? []) {
    if (widget.hidden) continue;
    const height = widget.computeSize?.(node.size[0])[1] ?? 20;
    top = Math.max(top, (widget.last_y ?? widget.y ?? 0) + height + 6);
  }
  const slots = Math.max(node.inputs?.length ?? 0, node.outputs?.length ?? 0);
  return Math.max(top, slots * 20 + 10);
}

/** Grow a node that has images to show, so they are not a thumbnail. */
function ensureImageRoom(node) {
  const wanted = imageTop(node) + 220;
  if (node.size[1] < wanted) node.setSize([Math.max(node.size[0], 260), wanted]);
}

/** Draw the node's images (or live preview) fitted into the free area; remembers the rectangle. */
function drawImages(node, ctx) {
  const top = imageTop(node);
  const area = [5, top, node.size[0] - 10, node.size[1] - top - 5];
  const ready = node.imgs.filter((img) => img.complete && img.naturalWidth > 0);
  if (!ready.length || area[3] < 20) return;
  const columns = Math.ceil(Math.sqrt(ready.length));
  const rows = Math.ceil(ready.length / columns);
  const cellW = area[2] / columns;
  const cellH = area[3] / rows;
  node.imageRects = ready.map((img, index) => {
    const scale = Math.min(cellW / img.naturalWidth, cellH / img.naturalHeight);
    const w = img.naturalWidth * scale;
    const h = img.naturalHeight * scale;
    const x = area[0] + (index % columns) * cellW + (cellW - w) / 2;
    const y = area[1] + Math.floor(index / columns) * cellH + (cellH - h) / 2;
    ctx.drawImage(img, x, y, w, h);
    return [x, y, w, h];
  });
}
