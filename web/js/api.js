// The server's HTTP API and websocket, as ComfyUI clients use them (PROTOCOL.md 1, 3).
//
// One object, an EventTarget: websocket messages are re-dispatched as CustomEvents
// named after their `type` (status, executing, progress, executed, ...), and preview
// frames as "b_preview" events whose detail is {blob, nodeId}.

/** Binary frame kinds (PROTOCOL.md 3.4). */
const PREVIEW_IMAGE = 1;
const TEXT = 3;
const PREVIEW_IMAGE_WITH_METADATA = 4;

/** A fresh random id: the websocket's sid, sent back as `client_id` with each prompt. */
function newClientId() {
  if (globalThis.crypto?.randomUUID) return crypto.randomUUID().replaceAll("-", "");
  return Math.random().toString(16).slice(2) + Date.now().toString(16);
}

export class Api extends EventTarget {
  /**
   * @param {string} base URL prefix of the server ("" = the page's own origin).
   */
  constructor(base = "") {
    super();
    this.base = base;
    // A token given as ?token=T in the page URL is sent on every request (server --auth-token).
    this.token = new URLSearchParams(location.search).get("token");
    this.clientId = sessionStorage.getItem("noodlebox.clientId") || newClientId();
    sessionStorage.setItem("noodlebox.clientId", this.clientId);
    this.socket = null;
    this.connected = false;
    /** Id of the node the server runs now; type-1 preview frames carry no node id. */
    this.runningNode = null;
  }

  /** URL of an API route (`/api` + path), with the auth token when there is one. */
  apiURL(path) {
    const url = `${this.base}/api${path}`;
    if (!this.token) return url;
    return url + (url.includes("?") ? "&" : "?") + `token=${encodeURIComponent(this.token)}`;
  }

  /** fetch() against the API; resolves to the Response (any status). */
  fetchApi(path, options = {}) {
    return fetch(this.apiURL(path), { cache: "no-store", ...options });
  }

  /** GET a route and parse its JSON body; throws on a non-2xx status. */
  async getJSON(path) {
    const response = await this.fetchApi(path);
    if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
    return response.json();
  }

  /** POST a JSON body; resolves to the Response. */
  postJSON(path, body) {
    return this.fetchApi(path, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
  }

  /** Every node definition: `{class_name: node_def}` (PROTOCOL.md 4). */
  getObjectInfo() {
    return this.getJSON("/object_info");
  }

  /**
   * Queue an API prompt with the editor's workflow attached (it ends up in the PNG).
   * @returns {Promise<{ok: boolean, status: number, body: object}>} the server's answer;
   *   on 400 `body` holds `error` and `node_errors` (PROTOCOL.md 2.5).
   */
  async queuePrompt(prompt, workflow, { front = false } = {}) {
    const body = { client_id: this.clientId, prompt, extra_data: { extra_pnginfo: { workflow } } };
    if (front) body.front = true;
    const response = await this.postJSON("/prompt", body);
    let payload = {};
    try {
      payload = await response.json();
    } catch {
      payload = { error: { type: "bad_response", message: `HTTP ${response.status}`, details: "" } };
    }
    return { ok: response.ok, status: response.status, body: payload };
  }

  /** Stop the running prompt. */
  interrupt() {
    return this.postJSON("/interrupt", {});
  }

  /** Remove every pending prompt. */
  clearQueue() {
    return this.postJSON("/queue", { clear: true });
  }

  /** Remove some pending prompts by id. */
  deleteQueueItems(promptIds) {
    return this.postJSON("/queue", { delete: promptIds });
  }

  /** `{queue_running, queue_pending}` (items are 5-element arrays). */
  getQueue() {
    return this.getJSON("/queue");
  }

  /** The last `maxItems` history entries, `{prompt_id: entry}` oldest first. */
  getHistory(maxItems = 50) {
    return this.getJSON(`/history?max_items=${maxItems}`);
  }

  /** Forget every history entry. */
  clearHistory() {
    return this.postJSON("/history", { clear: true });
  }

  /**
   * Upload an image into the input folder (PROTOCOL.md 1.5).
   * @returns {Promise<{name: string, subfolder: string, type: string}>}
   */
  async uploadImage(file) {
    const form = new FormData();
    form.append("image", file, file.name);
    const response = await this.fetchApi("/upload/image", { method: "POST", body: form });
    if (!response.ok) throw new Error(`upload failed: HTTP ${response.status}`);
    return response.json();
  }

  /** URL of an output/input/temp image, as `/view` serves it. */
  viewURL({ filename, subfolder = "", type = "output" }) {
    const query = new URLSearchParams({ filename, subfolder, type });
    return this.apiURL(`/view?${query}`);
  }

  /** Open the websocket; reconnects by itself 300 ms after a close, as ComfyUI's client does. */
  connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    let url = `${scheme}://${location.host}${this.base}/ws?clientId=${encodeURIComponent(this.clientId)}`;
    if (this.token) url += `&token=${encodeURIComponent(this.token)}`;
    const socket = new WebSocket(url);
    socket.binaryType = "arraybuffer";
    this.socket = socket;
    socket.addEventListener("open", () => {
      this.connected = true;
      socket.send(JSON.stringify({ type: "feature_flags", data: { supports_preview_metadata: true } }));
      this.dispatchEvent(new CustomEvent("connected"));
    });
    socket.addEventListener("close", () => {
      this.connected = false;
      this.dispatchEvent(new CustomEvent("disconnected"));
      setTimeout(() => this.connect(), 300);
    });
    socket.addEventListener("message", (event) => this.#onMessage(event));
  }

  #onMessage(event) {
    if (event.data instanceof ArrayBuffer) {
      this.#onBinary(event.data);
      return;
    }
    let message;
    try {
      message = JSON.parse(event.data);
    } catch {
      console.warn("unreadable websocket message", event.data);
      return;
    }
    const { type, data } = message;
    if (type === "executing") this.runningNode = data?.display_node ?? data?.node ?? null;
    this.dispatchEvent(new CustomEvent(type, { detail: data }));
  }

  #onBinary(buffer) {
    const view = new DataView(buffer);
    const kind = view.getUint32(0);
    if (kind === PREVIEW_IMAGE) {
      const format = view.getUint32(4) === 2 ? "image/png" : "image/jpeg";
      const blob = new Blob([buffer.slice(8)], { type: format });
      this.dispatchEvent(new CustomEvent("b_preview", { detail: { blob, nodeId: this.runningNode } }));
    } else if (kind === PREVIEW_IMAGE_WITH_METADATA) {
      const length = view.getUint32(4);
      const meta = JSON.parse(new TextDecoder().decode(buffer.slice(8, 8 + length)));
      const blob = new Blob([buffer.slice(8 + length)], { type: meta.image_type || "image/jpeg" });
      const nodeId = meta.display_node_id ?? meta.node_id ?? this.runningNode;
      this.dispatchEvent(new CustomEvent("b_preview", { detail: { blob, nodeId, meta } }));
    } else if (kind === TEXT) {
      const length = view.getUint32(4);
      const nodeId = new TextDecoder().decode(buffer.slice(8, 8 + length));
      const text = new TextDecoder().decode(buffer.slice(8 + length));
      this.dispatchEvent(new CustomEvent("progress_text", { detail: { nodeId, text } }));
    } else {
      console.warn("unknown binary frame type", kind);
    }
  }
}
