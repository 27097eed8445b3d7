# Create (or reuse) the project's virtual environment in .venv, install ehrscale into it,
# and activate it. Source it from the repository root:
#     source workflow/scripts/bootstrap.sh
# It reinstalls only when pyproject.toml has changed since the last install.
_ehrscale_bootstrap() {
    local root venv stamp want
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
    venv="${EHRSCALE_VENV:-$root/.venv}"
    stamp="$venv/.ehrscale-installed"
    want="$(sha256sum "$root/pyproject.toml" | cut -d' ' -f1)"
    if [ ! -x "$venv/bin/python" ]; then
        echo "bootstrap: creating $venv" >&2
        python3 -m venv "$venv" || return 1
    fi
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        echo "bootstrap: installing ehrscale into $venv (a few minutes the first time)" >&2
        "$venv/bin/python" -m pip install --quiet --upgrade pip || return 1
        # torch first, alone, pinned: a bare `torch` requirement would pull a multi-GB CUDA build.
        if ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
            "$venv/bin/python" -m pip install --quiet "torch==${EHRSCALE_TORCH_VERSION:-2.13.0}" || return 1
        fi
        "$venv/bin/python" -m pip install --quiet -e "$root[dev]" || return 1
        echo "$want" > "$stamp"
    fi
    # shellcheck disable=SC1091
    source "$venv/bin/activate"
}
_ehrscale_bootstrap
