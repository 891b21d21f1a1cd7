"""The command line: help, streaming, settings from the environment and files, exit codes, serve."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from ragglm.cli import EXIT_BAD_INPUT, EXIT_LISTEN, EXIT_MODEL, EXIT_NOTHING_READ, EXIT_REMOTE, app

REPO = Path(__file__).resolve().parents[1]
ROUTER_FAQ = REPO / "examples" / "manuals" / "router-r7-faq.html"
QUESTION = "How many devices can connect to the R7 at once?"
RAGGLM = [sys.executable, "-c", "from ragglm.cli import main; main()"]


@pytest.fixture
def runner(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ragglm.toml from the checkout
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    for name in [n for n in os.environ if n.startswith("RAGGLM_") and n != "RAGGLM_SHARED_DATA"]:
        monkeypatch.delenv(name)
    return CliRunner()


def test_help_has_examples_and_exit_codes(runner):
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "Examples:" in result.output and "ragglm serve --kb ./kb" in result.output
    assert "Exit codes: 0 done; 1 nothing could be read" in result.output
    serve_help = runner.invoke(app, ["serve", "--help"]).output
    for option in ("--api-key", "--port", "--host", "--max-tokens-limit", "RAGGLM_API_KEY"):
        assert option in serve_help
    assert "--stream / --no-stream" in runner.invoke(app, ["ask", "--help"]).output


def test_missing_and_unreadable_documents(runner, tmp_path):
    assert runner.invoke(app, ["ask", "a question"]).exit_code == EXIT_BAD_INPUT
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, ["ask", "--docs", str(tmp_path / "empty"), "a question"])
    assert result.exit_code == EXIT_NOTHING_READ
    assert "nothing could be read" in result.stderr


def test_streamed_and_buffered_output_agree(runner):
    args = ["ask", "--docs", str(ROUTER_FAQ), "--mode", "extractive", QUESTION]
    buffered = runner.invoke(app, args + ["--no-stream"])
    streamed = runner.invoke(app, args + ["--stream"])
    default = runner.invoke(app, args)  # not a terminal: buffered
    assert buffered.exit_code == streamed.exit_code == default.exit_code == 0, buffered.output
    assert buffered.stdout == streamed.stdout == default.stdout
    assert "128" in buffered.stdout and "Sources:" in buffered.stdout


def test_model_errors_have_their_own_exit_codes(runner, tmp_path, monkeypatch):
    base = ["ask", "--docs", str(ROUTER_FAQ), QUESTION]
    missing = runner.invoke(app, base + ["--model", str(tmp_path / "nothing.gguf")])
    assert missing.exit_code == EXIT_MODEL, missing.output
    assert "nothing.gguf" in missing.stderr
    remote = runner.invoke(app, base + ["--model", "openai:http://127.0.0.1:9/v1"])
    assert remote.exit_code == EXIT_REMOTE, remote.output
    assert "cannot reach the generation server" in remote.stderr
    # the same settings from RAGGLM_* variables and from a config file
    monkeypatch.setenv("RAGGLM_MODEL", str(tmp_path / "nothing.gguf"))
    assert runner.invoke(app, base).exit_code == EXIT_MODEL
    monkeypatch.delenv("RAGGLM_MODEL")
    (tmp_path / "ragglm.toml").write_text('model = "openai:http://127.0.0.1:9/v1"\n')
    assert runner.invoke(app, base).exit_code == EXIT_REMOTE


def test_bad_config_is_one_line_and_exit_2(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text("top_k = 'many'\n")
    env = {**os.environ, "RAGGLM_CONFIG": str(config)}
    result = subprocess.run(RAGGLM + ["search", "--docs", str(ROUTER_FAQ), "battery"], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == EXIT_BAD_INPUT
    assert result.stderr.strip() == f"ragglm: error: {config}: top_k = 'many' must be a whole number"


def test_serve_refuses_a_busy_port_before_loading_anything(runner):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = runner.invoke(app, ["serve", "--docs", str(ROUTER_FAQ), "--port", str(port)])
    assert result.exit_code == EXIT_LISTEN
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_ragglm_serve_process_with_the_openai_client(tmp_path):
    import openai

    port = _free_port()
    env = {**os.environ, "RAGGLM_API_KEY": "proc-key", "RAGGLM_MAX_NEW_TOKENS": "8", "RAGGLM_TOP_K": "1"}
    process = subprocess.Popen(RAGGLM + ["serve", "--docs", str(ROUTER_FAQ), "--port", str(port),
                                         "--log-level", "warning"],
                               env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 600
        while True:
            assert process.poll() is None, process.stdout.read()
            assert time.monotonic() < deadline, "the server did not come up"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="proc-key", max_retries=0)
        completion = client.chat.completions.create(
            model="ragglm", messages=[{"role": "user", "content": QUESTION}])
        assert completion.choices[0].message.content
        assert completion.citations[0]["source"].endswith("router-r7-faq.html")
        usage = completion.usage  # an extract: its quoted words are counted, though none were generated
        assert usage.completion_tokens > 0 and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="nope",
                          max_retries=0).models.list()
    finally:
        process.terminate()
        # a graceful shutdown; the server then re-raises SIGTERM, as a terminated process should
        assert process.wait(timeout=60) in (0, -signal.SIGTERM)
