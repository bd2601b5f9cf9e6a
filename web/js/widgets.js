// Widgets made from /object_info input specs (PROTOCOL.md 4.2, 6.4).
//
// Widget order is what makes `widgets_values` positional, so it follows ComfyUI's editor:
// one widget per widget-typed input in input_order, then right after a seed-like input
// its `control_after_generate` combo (and `control_filter_list` for combos), and after
// an `image_upload` combo the upload button whose saved value is the string "image".
// Editor-only widgets carry `options.serialize = false`: saved in widgets_values, never
// sent to the server.

const WIDGET_TYPES = new Set(["INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"]);
export const CONTROL_MODES = ["fixed", "increment", "decrement", "randomize"];
const COMBO_CONTROL_MODES = [...CONTROL_MODES, "increment-wrap"];
const SEED_NAMES = new Set(["seed", "noise_seed"]);

/**
 * An input spec as {type, options, choices}: `type` is "COMBO" for list specs.
 * @param {Array|string} spec `[TYPE]`, `[TYPE, options]`, `[[choices...], options]` or a bare type string.
 */
export function parseInputSpec(spec) {
  const [head, options = {}] = Array.isArray(spec) ? spec : [spec, {}];
  if (Array.isArray(head)) return { type: "COMBO", options, choices: head };
  if (head === "COMBO") return { type: "COMBO", options, choices: options.options ?? [] };
  return { type: String(head), options, choices: null };
}

/** Whether an input spec shows as a widget (rather than only a socket). */
export function isWidgetInput(spec) {
  const { type, options } = parseInputSpec(spec);
  return WIDGET_TYPES.has(type) && !options.forceInput && !options.defaultInput;
}

/** Whether the input gets a control_after_generate widget (explicit option, or an INT named seed). */
export function hasControlWidget(name, spec) {
  const { type, options } = parseInputSpec(spec);
  const flag = options.control_after_generate;
  if (flag === false) return false;
  if (flag) return true;
  return type === "INT" && SEED_NAMES.has(name);
}

/** Decimal places a FLOAT widget shows, from its `round` quantum or its step. */
function floatPrecision(options) {
  const quantum = typeof options.round === "number" && options.round > 0 ? options.round : options.step ?? 0.01;
  const text = String(quantum);
  if (text.includes("e-")) return Number(text.split("e-")[1]);
  return text.includes(".") ? text.split(".")[1].length : 0;
}

/** Round a FLOAT to its spec's quantum (`round`, default the step), as the editor does on edit. */
function roundFloat(value, options) {
  if (options.round === false) return value;
  const quantum = typeof options.round === "number" && options.round > 0 ? options.round : options.step ?? 0;
  if (!quantum) return value;
  const rounded = Math.round(value / quantum) * quantum;
  return Number(rounded.toFixed(floatPrecision(options)));
}

/**
 * Add the widget(s) of one input to `node`; returns the value widget.
 * @param {object} node a LGraphNode under construction
 * @param {string} name the input's name
 * @param {Array} spec the input's spec from /object_info
 * @param {object} hooks `{editText(node, widget, event), upload(node, widget)}` supplied by the app
 */
export function addInputWidget(node, name, spec, hooks) {
  const { type, options, choices } = parseInputSpec(spec);
  let widget;
  const onChange = () => node.onWidgetEdited?.(widget);
  if (type === "INT" || type === "FLOAT") {
    const step = options.step ?? (type === "INT" ? 1 : 0.5);
    const kind = options.display === "slider" ? "slider" : "number";
    const numberOptions = {
      min: options.min ?? 0,
      max: options.max ?? 2048,
      step2: step,
      step: step * 10, // litegraph's legacy step is ten times the real one
      precision: type === "INT" ? 0 : floatPrecision(options),
    };
    widget = node.addWidget(kind, name, options.default ?? 0, (value) => {
      widget.value = type === "INT" ? Math.round(value) : roundFloat(value, options);
      onChange();
    }, numberOptions);
  } else if (type === "STRING") {
    const initial = options.default ?? options.defaultVal ?? "";
    if (options.multiline) {
      widget = node.addCustomWidget(textAreaWidget(name, initial, options, hooks, onChange));
    } else {
      widget = node.addWidget("text", name, initial, () => onChange(), {});
    }
  } else if (type === "BOOLEAN") {
    widget = node.addWidget("toggle", name, Boolean(options.default), () => onChange(), {
      on: options.label_on ?? "true",
      off: options.label_off ?? "false",
    });
  } else {
    const values = [...choices];
    const initial = options.default !== undefined && values.includes(options.default) ? options.default : values[0] ?? "";
    widget = node.addWidget("combo", name, initial, () => onChange(), { values });
  }
  widget.tooltip = options.tooltip;
  widget.inputSpec = { type, options, choices };
  if (options.dynamicPrompts) widget.dynamicPrompts = true;
  if (hasControlWidget(name, spec)) addControlWidgets(node, widget, type);
  if (type === "COMBO" && options.image_upload) addUploadWidget(node, widget, hooks);
  return widget;
}

/** The control_after_generate combo (and, for combos, the filter string) after `target`. */
function addControlWidgets(node, target, type) {
  const modes = type === "COMBO" ? COMBO_CONTROL_MODES : CONTROL_MODES;
  const fallback = type === "FLOAT" ? "fixed" : "randomize";
  const wanted = target.inputSpec.options.control_after_generate;
  const initial = typeof wanted === "string" && modes.includes(wanted) ? wanted : fallback;
  const control = node.addWidget("combo", "control_after_generate", initial, () => {}, {
    values: modes,
    serialize: false,
  });
  control.tooltip = "What happens to the value after each queued run";
  target.linkedWidgets = [control];
  target.controlWidget = control;
  if (type === "COMBO") {
    const filter = node.addWidget("text", "control_filter_list", "", () => {}, { serialize: false });
    control.linkedWidgets = [filter];
    target.filterWidget = filter;
  }
}

/** The "choose file to upload" button of LoadImage-like nodes; its saved value is "image". */
function addUploadWidget(node, target, hooks) {
  const button = node.addWidget("button", "upload", "image", () => hooks.upload?.(node, target), {
    serialize: false,
  });
  button.label = "choose file to upload";
  target.uploadWidget = button;
}

/** A multiline text widget: drawn as a box of wrapped text, edited in a textarea dialog. */
function textAreaWidget(name, value, options, hooks, onChange) {
  const height = 90;
  return {
    type: "textarea",
    name,
    value,
    options: { multiline: true, placeholder: options.placeholder },
    y: 0,
    computeSize(width) {
      return [width ?? 200, height];
    },
    onPointerDown(pointer, node, canvas) {
      pointer.onClick = (event) => hooks.editText?.(node, this, event ?? pointer.eDown, canvas, onChange);
      return true;
    },
    draw(ctx, node, width, y) {
      const margin = 10;
      ctx.save();
      ctx.fillStyle = "#1b1b1b";
      ctx.strokeStyle = "#555";
      ctx.beginPath();
      ctx.roundRect(margin, y, width - margin * 2, height - 4, 4);
      ctx.fill();
      ctx.stroke();
      ctx.clip();
      ctx.font = "12px sans-serif";
      const text = this.value || options.placeholder || name;
      ctx.fillStyle = this.value ? "#ddd" : "#777";
      let line = "";
      let lineY = y + 16;
      const maxWidth = width - margin * 2 - 10;
      for (const word of String(text).replaceAll("\n", " \n ").split(" ")) {
        if (word === "\n" || ctx.measureText(`${line} ${word}`).width > maxWidth) {
          ctx.fillText(line, margin + 5, lineY);
          lineY += 15;
          line = word === "\n" ? "" : word;
        } else {
          line = line ? `${line} ${word}` : word;
        }
      }
      ctx.fillText(line, margin + 5, lineY);
      ctx.restore();
    },
  };
}

/**
 * Apply a value widget's control_after_generate mode (after a prompt is queued).
 * Randomize follows ComfyUI: floor(random * (max - min) / step) * step + min, with the
 * range clamped to +-2^50 so the result stays an exact integer in a double.
 */
export function applyControl(widget, random = Math.random) {
  const control = widget.controlWidget;
  if (!control) return;
  const mode = control.value;
  if (mode === "fixed" || mode === undefined) return;
  if (widget.type === "combo") {
    applyComboControl(widget, mode, random);
    return;
  }
  const { min = 0, max = 2048, step2 = 1 } = widget.options;
  const lo = Math.max(min, -(2 ** 50));
  const hi = Math.min(max, 2 ** 50);
  let value = widget.value;
  if (mode === "increment") value += step2;
  else if (mode === "decrement") value -= step2;
  else if (mode === "randomize") value = Math.floor((random() * (hi - lo)) / step2) * step2 + lo;
  widget.value = Math.min(Math.max(value, min), max);
}

function applyComboControl(widget, mode, random) {
  let values = widget.options.values ?? [];
  const filter = widget.filterWidget?.value;
  if (filter) {
    const needle = filter.toLowerCase();
    values = values.filter((v) => String(v).toLowerCase().includes(needle));
  }
  if (!values.length) return;
  const index = values.indexOf(widget.value);
  if (mode === "randomize") widget.value = values[Math.floor(random() * values.length)];
  else if (mode === "increment") widget.value = values[Math.min(index + 1, values.length - 1)];
  else if (mode === "increment-wrap") widget.value = values[(index + 1) % values.length];
  else if (mode === "decrement") widget.value = values[Math.max(index - 1, 0)];
}
