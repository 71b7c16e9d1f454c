"""The node's web dashboard: static pages at `/` that read the node's open API.

`site` serves the files under `static/` (plain HTML, CSS and JavaScript modules, no
build step); `traffic` keeps a short history of the byte counters for the dashboard's
chart. The pages only read the open, read-only endpoints of `/api/v1/`, so a browser
learns nothing the API would not tell any client.
"""
