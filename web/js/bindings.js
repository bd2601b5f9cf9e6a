// The editor's controls outside the canvas: toolbar buttons, keyboard habits of ComfyUI
// users, files dropped on the page, and tooltips from node definitions.

import { pickFile } from "./files.js";

/** Wire the toolbar buttons of index.html to the app. */
export function bindToolbar(app) {
  const click = (id, handler) => document.getElementById(id)?.addEventListener("click", handler);
  click("queue-button", () => app.queue());
  click("interrupt-button", () => app.api.interrupt());
  click("clear-queue-button", async () => {
    await app.api.clearQueue();
    app.queuePanel.refresh();
  });
  click("clear-history-button", async () => {
    await app.api.clearHistory();
    app.queuePanel.refresh();
  });
  click("save-button", () => app.saveWorkflow());
  click("export-api-button", () => app.exportApi());
  click("load-button", async () => {
    const file = await pickFile(".json,.png,application/json,image/png");
    if (file) await app.openFile(file);
  });
  click("default-button", () => app.loadDefault());
  click("clear-button", () => {
    if (confirm("Remove every node from the canvas?")) app.clearGraph();
  });
}

const MUTED = 2;
const BYPASS = 4;

/** Ctrl+B / Ctrl+M: bypass or mute the selected nodes, or bring them back when all already are. */
function toggleMode(app, mode) {
  const nodes = Object.values(app.canvas.selected_nodes ?? {});
  if (!nodes.length) return;
  const next = nodes.every((node) => node.mode === mode) ? 0 : mode;
  for (const node of nodes) node.mode = next;
  app.graph.setDirtyCanvas(true, true);
}

/**
 * Ctrl+Enter queues (with Shift: to the front), Ctrl+S saves, Ctrl+O opens, Ctrl+B bypasses
 * and Ctrl+M mutes the selection; Delete and Ctrl+C/V reach the canvas even when the focus is
 * on the page rather than the canvas.
 */
export function bindKeys(app) {
  window.addEventListener("keydown", (event) => {
    const typing = ["input", "textarea", "select"].includes(event.target.localName);
    const ctrl = event.ctrlKey || event.metaKey;
    if (ctrl && event.key === "Enter") {
      event.preventDefault();
      app.queue(undefined, event.shiftKey);
    } else if (ctrl && event.key.toLowerCase() === "s") {
      event.preventDefault();
      app.saveWorkflow();
    } else if (ctrl && event.key.toLowerCase() === "o") {
      event.preventDefault();
      document.getElementById("load-button")?.click();
    } else if (ctrl && !typing && ["b", "m"].includes(event.key.toLowerCase())) {
      event.preventDefault();
      toggleMode(app, event.key.toLowerCase() === "b" ? BYPASS : MUTED);
    } else if (event.key === "Escape") {
      app.search.close();
    } else if (!typing && event.target !== app.elements.canvas) {
      app.canvas.processKey(event);
    }
  });
}

/** A file dropped on an image-upload node is uploaded to it; anywhere else it is opened as a workflow. */
export function bindDrop(app) {
  const target = document.body;
  target.addEventListener("dragover", (event) => event.preventDefault());
  target.addEventListener("drop", async (event) => {
    event.preventDefault();
    const file = event.dataTransfer?.files?.[0];
    if (!file) return;
    const [x, y] = app.canvas.convertEventToCanvasOffset(event);
    const node = app.nodeAt(x, y);
    const uploadWidget = node?.widgets?.find((w) => w.uploadWidget);
    if (uploadWidget && file.type.startsWith("image/")) await app.uploadInto(node, uploadWidget, file);
    else await app.openFile(file);
  });
}

/** The canvas's tooltip follows the pointer: node descriptions on titles, input/output and widget tooltips. */
export function bindTooltips(app) {
  const element = app.elements.canvas;
  element.addEventListener("mousemove", () => {
    const [x, y] = app.canvas.graph_mouse;
    const node = app.graph.getNodeOnPos(x, y);
    let text = "";
    if (node) {
      const widget = node.getWidgetOnPos?.(x, y);
      const slot = node.getSlotInPosition?.(x, y);
      if (slot?.input) text = slot.input.tooltip ?? "";
      else if (slot?.output) text = slot.output.tooltip ?? "";
      else if (widget) text = widget.tooltip ?? "";
      else if (y < node.pos[1]) text = node.constructor.description ?? "";
    }
    if (element.title !== text) element.title = text;
  });
}
