// Finding nodes: the search box (double-click on the canvas) and the palette sidebar,
// both from /object_info's names, display names, categories and descriptions.

/**
 * Node definitions matching `query`, best first: exact names, then prefixes of the
 * display name or name, then words anywhere, then category and description matches.
 * @param {object[]} defs node definitions (virtual ones included)
 * @param {string} query what the user typed
 * @param {string|null} typeFilter only nodes with an input or output of this type
 */
export function searchNodes(defs, query, typeFilter = null, limit = 40) {
  const needle = query.trim().toLowerCase();
  const scored = [];
  for (const def of defs) {
    if (typeFilter && !hasSocketType(def, typeFilter)) continue;
    const name = def.name.toLowerCase();
    const display = (def.display_name || def.name).toLowerCase();
    let score;
    if (!needle) score = 5;
    else if (name === needle || display === needle) score = 0;
    else if (display.startsWith(needle) || name.startsWith(needle)) score = 1;
    else if (display.includes(needle) || name.includes(needle)) score = 2;
    else if (needle.split(/\s+/).every((word) => `${display} ${name}`.includes(word))) score = 3;
    else if (`${def.category} ${def.description}`.toLowerCase().includes(needle)) score = 4;
    else continue;
    scored.push([score, def.name.length, def]); // ties: the shorter class name is the more basic node
  }
  scored.sort((a, b) => a[0] - b[0] || a[1] - b[1] || a[2].name.localeCompare(b[2].name));
  return scored.slice(0, limit).map((entry) => entry[2]);
}

function hasSocketType(def, type) {
  const outputs = def.output ?? [];
  const inputs = Object.values({ ...def.input?.required, ...def.input?.optional });
  const match = (t) => t === "*" || String(t).split(",").includes(type);
  return outputs.some(match) || inputs.some((spec) => match(Array.isArray(spec) ? spec[0] : spec));
}

/** The search box: a text field over a result list, opened where the user double-clicked. */
export class SearchBox {
  /**
   * @param {() => object[]} getDefs current node definitions
   * @param {(def: object, ctx: object) => void} onPick add the chosen node
   */
  constructor(getDefs, onPick) {
    this.getDefs = getDefs;
    this.onPick = onPick;
    this.element = null;
  }

  /** Open at client coordinates (x, y); `ctx` is handed back to onPick (canvas position, link to connect). */
  open(x, y, ctx = {}) {
    this.close();
    const box = document.createElement("div");
    box.className = "nb-search";
    box.innerHTML = `<input type="text" class="nb-search-input" placeholder="Search nodes…" spellcheck="false">
      <ul class="nb-search-results" role="listbox"></ul>`;
    box.style.left = `${Math.min(x, window.innerWidth - 380)}px`;
    box.style.top = `${Math.min(y, window.innerHeight - 360)}px`;
    document.body.append(box);
    this.element = box;
    const input = box.querySelector("input");
    const list = box.querySelector("ul");
    let results = [];
    let selected = 0;
    const render = () => {
      results = searchNodes(this.getDefs(), input.value, ctx.typeFilter ?? null);
      selected = Math.min(selected, Math.max(results.length - 1, 0));
      list.replaceChildren(
        ...results.map((def, index) => {
          const item = document.createElement("li");
          item.className = `nb-search-item${index === selected ? " selected" : ""}`;
          item.dataset.nodeType = def.name;
          item.title = def.description || "";
          item.innerHTML = `<span class="nb-search-name"></span><span class="nb-search-category"></span>`;
          item.firstChild.textContent = def.display_name || def.name;
          item.lastChild.textContent = def.category || "";
          item.addEventListener("mousedown", (event) => {
            event.preventDefault();
            this.#pick(def, ctx);
          });
          return item;
        }),
      );
    };
    input.addEventListener("input", () => {
      selected = 0;
      render();
    });
    input.addEventListener("keydown", (event) => {
      event.stopPropagation();
      if (event.key === "Escape") this.close();
      else if (event.key === "ArrowDown") selected = Math.min(selected + 1, results.length - 1);
      else if (event.key === "ArrowUp") selected = Math.max(selected - 1, 0);
      else if (event.key === "Enter" && results[selected]) this.#pick(results[selected], ctx);
      else return;
      event.preventDefault();
      if (this.element) render();
    });
    // Close on a press outside the box, not on blur: the canvas takes the focus back when the
    // double-click that opened the box ends, which would close it at once.
    this.outside = (event) => {
      if (!box.contains(event.target)) this.close();
    };
    setTimeout(() => document.addEventListener("pointerdown", this.outside, true), 0);
    render();
    input.focus();
    setTimeout(() => input.focus(), 0);
  }

  #pick(def, ctx) {
    this.close();
    this.onPick(def, ctx);
  }

  /** Close the box if it is open. */
  close() {
    if (this.outside) document.removeEventListener("pointerdown", this.outside, true);
    this.outside = null;
    this.element?.remove();
    this.element = null;
  }
}

/**
 * Fill the palette sidebar: a filter field and a tree of categories; clicking a node adds it.
 * @param {HTMLElement} root the sidebar element
 * @param {object[]} defs node definitions
 * @param {(def: object) => void} onPick add the node at the canvas centre
 */
export function buildPalette(root, defs, onPick) {
  root.replaceChildren();
  const filter = Object.assign(document.createElement("input"), {
    type: "search",
    className: "nb-palette-filter",
    placeholder: "Filter nodes…",
  });
  const tree = document.createElement("div");
  tree.className = "nb-palette-tree";
  root.append(filter, tree);
  const render = () => {
    const shown = filter.value ? searchNodes(defs, filter.value, null, 1000) : defs;
    const byCategory = new Map();
    for (const def of shown) {
      const category = def.category || "uncategorized";
      if (!byCategory.has(category)) byCategory.set(category, []);
      byCategory.get(category).push(def);
    }
    const sections = [...byCategory.keys()].sort().map((category) => {
      const details = document.createElement("details");
      details.open = Boolean(filter.value);
      details.dataset.category = category;
      const summary = document.createElement("summary");
      summary.textContent = category;
      details.append(summary);
      for (const def of byCategory.get(category).sort((a, b) => (a.display_name || a.name).localeCompare(b.display_name || b.name))) {
        const item = document.createElement("button");
        item.type = "button";
        item.className = "nb-palette-item";
        item.dataset.nodeType = def.name;
        item.textContent = def.display_name || def.name;
        item.title = def.description || def.name;
        item.addEventListener("click", () => onPick(def));
        details.append(item);
      }
      return details;
    });
    tree.replaceChildren(...sections);
  };
  filter.addEventListener("input", render);
  filter.addEventListener("keydown", (event) => event.stopPropagation());
  render();
}
