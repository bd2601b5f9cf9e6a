// Entry point: load litegraph (the ES module build, served from web/node_modules), then start the editor.

import * as litegraph from "../node_modules/@comfyorg/litegraph/dist/litegraph.es.js";
import { Api } from "./api.js";
import { App } from "./app.js";

const api = new Api();
const app = new App(litegraph, api, {
  canvas: document.getElementById("graph-canvas"),
  palette: document.getElementById("palette"),
  queuePanel: document.getElementById("queue-panel-body"),
  status: document.getElementById("status-line"),
  batch: document.getElementById("batch-count"),
  queueSize: document.getElementById("queue-size"),
});
// The tests (and curious users, from the console) reach the editor here.
window.noodlebox = app;
window.LiteGraph = litegraph.LiteGraph;
app
  .start()
  .then(() => {
    document.body.dataset.ready = "true";
  })
  .catch((error) => {
    app.notify(`The editor could not start: ${error.message}`, "error");
    console.error(error);
  });
