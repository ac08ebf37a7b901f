"""``GET /docs``: an API reference page that works offline.

FastAPI's default ``/docs`` loads Swagger UI's JavaScript and CSS from a CDN, so on a
machine without internet access (where a local model server often runs) it is a blank
page. This page is one self-contained HTML document: a few lines of inline JavaScript
read the served ``openapi.json`` (relative URL, same origin) and list every operation with
its description, parameters, request body schema and responses. Nothing is fetched from
another host.
"""

from __future__ import annotations

__all__ = ["DOCS_HTML"]

DOCS_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>embedstack API</title>
<style>
body { font: 15px/1.5 system-ui, sans-serif; margin: 2em auto; max-width: 60em;
       padding: 0 1em; color: #222; }
h1 { margin-bottom: 0; } .meta { color: #666; margin-top: 0; }
details { border: 1px solid #ddd; border-radius: 6px; margin: .6em 0; padding: .4em .8em; }
summary { cursor: pointer; } .path { font-family: monospace; font-weight: 600; }
.method { display: inline-block; min-width: 4.5em; font-weight: 700; font-family: monospace; }
.get { color: #0a6; } .post { color: #06c; } .delete { color: #c30; }
pre { background: #f6f6f6; padding: .6em; overflow: auto; font-size: 13px; }
.desc { white-space: pre-wrap; }
</style>
</head>
<body>
<h1 id="title">embedstack API</h1>
<p class="meta" id="meta">loading <a href="openapi.json">openapi.json</a> ...</p>
<div id="ops"></div>
<script>
"use strict";
function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}
function resolve(spec, schema, depth) {
  if (!schema || depth > 6) return schema;
  if (schema.$ref) {
    const name = schema.$ref.split("/").pop();
    return resolve(spec, spec.components.schemas[name], depth + 1);
  }
  const out = Array.isArray(schema) ? [] : {};
  for (const [key, value] of Object.entries(schema)) {
    out[key] = typeof value === "object" && value !== null ? resolve(spec, value, depth + 1)
                                                           : value;
  }
  return out;
}
function block(title, value) {
  const wrap = el("div");
  wrap.appendChild(el("h4", "", title));
  wrap.appendChild(el("pre", "", JSON.stringify(value, null, 2)));
  return wrap;
}
fetch("openapi.json").then(r => r.json()).then(spec => {
  document.getElementById("title").textContent = spec.info.title + " " + spec.info.version;
  const meta = document.getElementById("meta");
  meta.textContent = spec.info.description || "";
  const ops = document.getElementById("ops");
  for (const [path, methods] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(methods)) {
      const item = el("details");
      const head = el("summary");
      head.appendChild(el("span", "method " + method, method.toUpperCase()));
      head.appendChild(el("span", "path", path));
      if (op.summary) head.appendChild(el("span", "", " - " + op.summary));
      item.appendChild(head);
      if (op.description) item.appendChild(el("p", "desc", op.description));
      if (op.parameters) item.appendChild(block("parameters", resolve(spec, op.parameters, 0)));
      const body = op.requestBody && op.requestBody.content["application/json"];
      if (body) item.appendChild(block("request body", resolve(spec, body.schema, 0)));
      if (op.responses) item.appendChild(block("responses", resolve(spec, op.responses, 0)));
      ops.appendChild(item);
    }
  }
}).catch(err => {
  document.getElementById("meta").textContent = "could not read openapi.json: " + err;
});
</script>
</body>
</html>
"""
