// A small Markdown subset for agent output, built as DOM nodes (never innerHTML), so whatever an
// agent writes is shown as text: headings, paragraphs, lists, block quotes, fenced and inline
// code, **strong**, *emphasis*. Links and raw HTML are left as the text they are.
"use strict";
(function () {
  function inline(text) {
    const out = document.createDocumentFragment();
    const pattern = /`([^`]+)`|\*\*([^*]+)\*\*|__([^_]+)__|\*([^*\s][^*]*)\*|_([^_\s][^_]*)_/g;
    let last = 0;
    let match;
    while ((match = pattern.exec(text)) !== null) {
      if (match.index > last) out.append(document.createTextNode(text.slice(last, match.index)));
      let node;
      if (match[1] !== undefined) { node = document.createElement("code"); node.textContent = match[1]; }
      else if (match[2] !== undefined || match[3] !== undefined) {
        node = document.createElement("strong"); node.textContent = match[2] !== undefined ? match[2] : match[3];
      } else { node = document.createElement("em"); node.textContent = match[4] !== undefined ? match[4] : match[5]; }
      out.append(node);
      last = pattern.lastIndex;
    }
    if (last < text.length) out.append(document.createTextNode(text.slice(last)));
    return out;
  }

  function render(text) {
    const root = document.createElement("div");
    root.className = "md";
    const lines = String(text).replace(/\r\n?/g, "\n").split("\n");
    let i = 0;
    let para = [];
    const flush = () => {
      if (para.length) { const p = document.createElement("p"); p.append(inline(para.join(" "))); root.append(p); para = []; }
    };
    while (i < lines.length) {
      const line = lines[i];
      const fence = line.match(/^\s*(```|~~~)\s*([\w+-]*)\s*$/);
      if (fence) {
        flush();
        const body = [];
        i++;
        while (i < lines.length && !lines[i].trim().startsWith(fence[1])) { body.push(lines[i]); i++; }
        i++;
        const pre = document.createElement("pre");
        const code = document.createElement("code");
        if (fence[2]) code.dataset.lang = fence[2];
        code.textContent = body.join("\n");
        pre.append(code);
        root.append(pre);
        continue;
      }
      const heading = line.match(/^(#{1,6})\s+(.*)$/);
      if (heading) {
        flush();
        const h = document.createElement("h" + Math.min(6, heading[1].length + 3));
        h.append(inline(heading[2]));
        root.append(h);
        i++;
        continue;
      }
      const item = line.match(/^\s*([-*+]|\d+[.)])\s+(.*)$/);
      if (item) {
        flush();
        const ordered = /\d/.test(item[1]);
        const list = document.createElement(ordered ? "ol" : "ul");
        while (i < lines.length) {
          const m = lines[i].match(/^\s*([-*+]|\d+[.)])\s+(.*)$/);
          if (!m || /\d/.test(m[1]) !== ordered) break;
          const li = document.createElement("li");
          li.append(inline(m[2]));
          list.append(li);
          i++;
        }
        root.append(list);
        continue;
      }
      const quote = line.match(/^\s*>\s?(.*)$/);
      if (quote) {
        flush();
        const block = document.createElement("blockquote");
        const body = [];
        while (i < lines.length && /^\s*>/.test(lines[i])) { body.push(lines[i].replace(/^\s*>\s?/, "")); i++; }
        block.append(inline(body.join(" ")));
        root.append(block);
        continue;
      }
      if (!line.trim()) { flush(); i++; continue; }
      para.push(line.trim());
      i++;
    }
    flush();
    return root;
  }

  window.ParallaxMarkdown = { render, inline };
})();
