"""An OpenAI Agents SDK sandbox agent whose every command runs in autodev.

    autodev serve &                      # loopback, no keys: one tenant
    python examples/agents/agent.py --project examples/buggy_add/project \\
        --replay examples/agents/replay.json

With `--replay` the model is the SDK's own scripted model (each step a
command or a final message, no network); without it, the SDK's OpenAI
provider is used (`OPENAI_API_KEY`, and `OPENAI_BASE_URL` for any
OpenAI-compatible server) with `--model`, over Chat Completions (what such
servers speak; `--api responses` for OpenAI's Responses API). The project's files are copied
into a fresh autodev session; the agent's shell tool runs each command in a
fresh locked-down container on it. Prints the agent's final answer, then
the session's files as they ended (the agent's changes came back).
"""

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

from agents import Runner, RunConfig, set_default_openai_api, set_tracing_disabled
from agents.run_config import SandboxRunConfig
from agents.sandbox import Manifest, SandboxAgent
from agents.sandbox.capabilities import Capabilities, Shell
from agents.sandbox.entries import File

from autodev_client.agents import AutodevSandboxClient, AutodevSandboxClientOptions

INSTRUCTIONS = (
    "Make the project's tests pass without changing the tests. Run them with "
    "`python3 -m pytest -q`. Every command runs in a fresh container: no process "
    "outlives its command, files persist."
)


def scripted(path: Path):
    """The SDK's scripted model, from a file of steps: {"exec": CMD} or {"say": TEXT}."""
    from agents.testing import ScriptedModel, assistant_message, function_call

    steps = []
    for n, step in enumerate(json.loads(path.read_text())):
        if "exec" in step:
            steps.append([function_call("exec_command", {"cmd": step["exec"]}, call_id=f"call-{n}")])
        else:
            steps.append([assistant_message(step["say"])])
    return ScriptedModel(steps)


def project_files(root: Path) -> dict:
    return {
        p.relative_to(root).as_posix(): File(content=p.read_bytes())
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default=os.environ.get("AUTODEV_URL", "http://127.0.0.1:8844"))
    ap.add_argument("--token", default=os.environ.get("AUTODEV_TOKEN"))
    ap.add_argument("--project", type=Path, required=True)
    ap.add_argument("--replay", type=Path, help="scripted model steps (JSON); no network model")
    ap.add_argument("--model", default="gpt-4.1")
    ap.add_argument("--api", choices=["chat", "responses"], default="chat")
    ap.add_argument("--max-turns", type=int, default=12)
    args = ap.parse_args()

    capabilities = Capabilities.default()
    if args.replay:
        # Nothing leaves this host: no model service, no trace export.
        set_tracing_disabled(True)
        model = scripted(args.replay)
    else:
        set_default_openai_api("chat_completions" if args.api == "chat" else "responses")
        if os.environ.get("OPENAI_BASE_URL"):
            # Another server than OpenAI's: the SDK would still export its
            # traces to OpenAI, with the key meant for that server.
            set_tracing_disabled(True)
        model = args.model
        if args.api == "chat":
            # Chat Completions carries function tools only: the shell (the
            # SDK's patch tool is a Responses-API tool).
            capabilities = [Shell()]
    agent = SandboxAgent(name="fixer", instructions=INSTRUCTIONS, model=model, capabilities=capabilities,
                         default_manifest=Manifest(entries=project_files(args.project)))
    client = AutodevSandboxClient(args.url, args.token)
    session = await client.create(manifest=agent.default_manifest, options=AutodevSandboxClientOptions(
        limits={"timeout": "60s"}))
    try:
        async with session:
            result = await Runner.run(agent, "Fix the failing tests.", max_turns=args.max_turns,
                                      run_config=RunConfig(sandbox=SandboxRunConfig(session=session)))
            for item in result.new_items:
                if item.type == "tool_call_output_item":
                    print(f"[tool] {item.output}")
            print(result.final_output)
            for entry in await session.ls("."):
                if not entry.is_dir():
                    text = (await session.read(Path(entry.path))).read().decode(errors="replace")
                    print(f"--- {entry.path}\n{text}", end="" if text.endswith("\n") else "\n")
    finally:
        await client.delete(session)
        await client.aclose()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
