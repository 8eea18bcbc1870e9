"""lms runtime: engine versions installed from the package index beside the bundled ones, selected per engine,
used by newly loaded models (lms ps shows which), and a failed install that changes nothing."""

from __future__ import annotations

import sys

import httpx

from tests.conftest import REPO

MLX_KEY = "lmstudio-community/smollm2-135m-instruct-mlx-4bit"
OTHER_MLX = "0.32.1"


def test_runtime_ls_survey_and_update_plan(lms):
    engines = {r["name"]: r for r in lms.json("runtime", "ls") if r["bundled"]}
    assert engines["llama.cpp"]["selected"] and engines["llama.cpp"]["modelFormat"] == "GGUF"
    assert engines["mlx"]["modelFormat"] == "MLX"
    facts = lms.json("runtime", "survey")
    assert facts["cpu"]["threads"] >= 1 and facts["memory"]["totalBytes"] > 0 and isinstance(facts["gpus"], list)
    [plan] = lms.json("runtime", "update", "llama.cpp", "--dry-run")
    assert plan["name"] == "llama.cpp" and plan["current"] == engines["llama.cpp"]["version"] and plan["latest"]
    table = lms.run("runtime", "ls").stdout
    assert "LLM ENGINE" in table and "SELECTED" in table and "MODEL FORMAT" in table


def test_get_select_and_serve_another_mlx_version(lms):
    sys.path.insert(0, str(REPO))
    from tools.mlx_from_gguf import ensure_mlx_smollm2

    target = lms.home / "models" / "lmstudio-community" / "SmolLM2-135M-Instruct-MLX-4bit"
    target.parent.mkdir(parents=True)
    target.symlink_to(ensure_mlx_smollm2())
    bad = lms.run("runtime", "get", "mlx@0.0.0", check=False)  # no such release: nothing changes
    assert bad.returncode == 1 and "failed" in bad.stderr
    assert not any(r["version"] == "0.0.0" for r in lms.json("runtime", "ls"))

    got = lms.json("runtime", "get", f"mlx@{OTHER_MLX}")
    assert got["version"] == OTHER_MLX
    lms.run("runtime", "select", f"mlx@{OTHER_MLX}")
    selected = {r["name"]: r["version"] for r in lms.json("runtime", "ls") if r["selected"]}
    assert selected["mlx"] == OTHER_MLX
    lms.run("server", "start", "-p", str(lms.port))
    lms.run("load", MLX_KEY, "-y", "-c", "1024")
    [model] = lms.json("ps")
    assert model["engine"] == {"name": "mlx", "version": OTHER_MLX}
    answer = httpx.post(f"{lms.base_url}/v1/chat/completions", timeout=120, json={
        "model": MLX_KEY, "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 5}).json()
    assert answer["choices"][0]["message"]["content"]
    busy = lms.run("runtime", "remove", f"mlx@{OTHER_MLX}", check=False)
    assert busy.returncode == 1 and "in use" in busy.stderr
    bundled = next(r["version"] for r in lms.json("runtime", "ls") if r["name"] == "mlx" and r["bundled"])
    assert lms.json("runtime", "select", f"mlx@{bundled}") == {"engine": "mlx", "version": bundled, "selected": True}
    lms.run("unload", "--all")
    assert lms.json("runtime", "remove", f"mlx@{OTHER_MLX}") == {"engine": "mlx", "version": OTHER_MLX,
                                                                  "removed": True}
    assert [r["version"] for r in lms.json("runtime", "ls") if r["name"] == "mlx"] == [bundled]
