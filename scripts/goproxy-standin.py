"""A Go module proxy stand-in on loopback: answers the egress proxy's
forwarded requests (absolute URIs) from a folder in GOPROXY layout.

Usage: python3 scripts/goproxy-standin.py FOLDER PORT
"""
import http.server
import sys
import urllib.parse

root, port = sys.argv[1], int(sys.argv[2])


class Handler(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *a, **k):
        super().__init__(*a, directory=root, **k)

    def translate_path(self, path):
        return super().translate_path(urllib.parse.urlsplit(path).path)


http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
