// The queue/history panel: what runs, what waits (with a remove button each) and what
// ran (status, output thumbnails, and a button to load that run's workflow back).

/** Render into `root` from the API; call again whenever a `status` event arrives. */
export class QueuePanel {
  /**
   * @param {HTMLElement} root the panel element
   * @param {object} api the Api
   * @param {(workflow: object) => void} loadWorkflow puts a workflow on the canvas
   */
  constructor(root, api, loadWorkflow) {
    this.root = root;
    this.api = api;
    this.loadWorkflow = loadWorkflow;
    this.pending = null;
    this.again = false;
  }

  /** Refresh the panel; a call made while a refresh is in flight runs once more after it. */
  refresh() {
    if (this.pending) {
      this.again = true;
      return this.pending;
    }
    this.pending = this.#render().finally(() => {
      this.pending = null;
      if (this.again) {
        this.again = false;
        this.refresh();
      }
    });
    return this.pending;
  }

  async #render() {
    let queue;
    let history;
    try {
      [queue, history] = await Promise.all([this.api.getQueue(), this.api.getHistory(30)]);
    } catch (error) {
      this.root.textContent = `queue unavailable: ${error.message}`;
      return;
    }
    const running = queue.queue_running ?? [];
    const pending = [...(queue.queue_pending ?? [])].sort((a, b) => a[0] - b[0]);
    const section = (title, className) => {
      const element = document.createElement("section");
      element.className = className;
      const heading = document.createElement("h3");
      heading.textContent = title;
      element.append(heading);
      return element;
    };
    const runningSection = section(`Running (${running.length})`, "nb-queue-running");
    for (const item of running) runningSection.append(this.#queueRow(item, false));
    const pendingSection = section(`Pending (${pending.length})`, "nb-queue-pending");
    for (const item of pending) pendingSection.append(this.#queueRow(item, true));
    const entries = Object.entries(history).reverse();
    const historySection = section(`History (${entries.length})`, "nb-queue-history");
    for (const [promptId, entry] of entries) historySection.append(this.#historyRow(promptId, entry));
    this.root.replaceChildren(runningSection, pendingSection, historySection);
  }

  #queueRow(item, removable) {
    const [number, promptId, , extraData] = item;
    const row = document.createElement("div");
    row.className = "nb-queue-item";
    row.dataset.promptId = promptId;
    row.textContent = `#${number} ${promptId.slice(0, 8)}`;
    const workflow = extraData?.extra_pnginfo?.workflow;
    if (workflow) row.append(this.#button("load", () => this.loadWorkflow(workflow)));
    if (removable) {
      row.append(this.#button("remove", async () => {
        await this.api.deleteQueueItems([promptId]);
        this.refresh();
      }));
    }
    return row;
  }

  #historyRow(promptId, entry) {
    const row = document.createElement("div");
    const status = entry.status?.status_str ?? "success";
    row.className = `nb-history-item nb-status-${status}`;
    row.dataset.promptId = promptId;
    const label = document.createElement("span");
    label.textContent = `${status === "success" ? "✓" : "✗"} ${promptId.slice(0, 8)}`;
    row.append(label);
    const thumbs = document.createElement("div");
    thumbs.className = "nb-thumbs";
    for (const output of Object.values(entry.outputs ?? {})) {
      for (const image of output.images ?? []) {
        const img = document.createElement("img");
        img.src = this.api.viewURL(image);
        img.alt = image.filename;
        img.title = image.filename;
        img.loading = "lazy";
        thumbs.append(img);
      }
    }
    row.append(thumbs);
    const workflow = entry.prompt?.[3]?.extra_pnginfo?.workflow;
    if (workflow) row.append(this.#button("load", () => this.loadWorkflow(workflow)));
    return row;
  }

  #button(text, onClick) {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = text;
    button.addEventListener("click", onClick);
    return button;
  }
}
