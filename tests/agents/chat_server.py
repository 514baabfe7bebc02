"""An OpenAI-compatible Chat Completions server on loopback for the agent
example: it answers from a replay file (each step a command for the
agent's `exec_command` tool, or a final message), choosing the step by how
many tool results the request carries back, and writes every request it
gets to a log (JSON Lines). Prints its port, then serves until killed.

Usage: chat_server.py REPLAY LOG
"""
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

steps = json.load(open(sys.argv[1]))
log = open(sys.argv[2], "a")


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        log.write(json.dumps({"path": self.path, "body": body}) + "\n")
        log.flush()
        if not self.path.endswith("/chat/completions"):
            self.send_error(404)
            return
        n = sum(1 for m in body["messages"] if m.get("role") == "tool")
        step = steps[min(n, len(steps) - 1)]
        if "exec" in step:
            call = {"id": f"call_{n}", "type": "function",
                    "function": {"name": "exec_command", "arguments": json.dumps({"cmd": step["exec"]})}}
            message, finish = {"role": "assistant", "content": None, "tool_calls": [call]}, "tool_calls"
        else:
            message, finish = {"role": "assistant", "content": step["say"]}, "stop"
        answer = json.dumps({
            "id": f"chatcmpl-{n}", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
