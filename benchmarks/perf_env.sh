# Source this file (bash) to run perf_analyzer from tritonclient 2.51.0:
#
#     source benchmarks/perf_env.sh
#     perf_analyzer -m <model> -u 127.0.0.1:8001 -i grpc --input-data data.json --concurrency-range 1
#
# The virtual environment is $VIRTUAL_ENV if set, else <repo>/.venv. It puts that venv's bin/
# first on PATH and adds to LD_LIBRARY_PATH what perf_analyzer's binary needs:
#   libcudart.so.12  from the pip package nvidia-cuda-runtime-cu12 (nvidia/cuda_runtime/lib);
#   libb64.so.0d     from the system (Debian package libb64-0d).
# Where either is missing, it falls back to the copies bundled (under hashed names) in the
# nvidia-pytriton wheel's nvidia_pytriton.libs/, symlinked under their real names into
# ${XDG_CACHE_HOME:-~/.cache}/towerserve/perf-libs/. Nothing here is a path of one machine.

_towerserve_perf_env() {
    local here repo venv py site libs shim lib use_shim=0
    here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
    repo="$(dirname "$here")"
    venv="${VIRTUAL_ENV:-$repo/.venv}"
    py="$venv/bin/python"
    if [ ! -x "$py" ]; then
        echo "perf_env.sh: no Python at $py; activate the project's venv or set VIRTUAL_ENV" >&2
        return 1
    fi
    if [ ! -x "$venv/bin/perf_analyzer" ]; then
        echo "perf_env.sh: $venv/bin/perf_analyzer missing;" \
            "run: $py -m pip install 'tritonclient[all]==2.51.0'" >&2
        return 1
    fi
    site="$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    libs=()
    shim="${XDG_CACHE_HOME:-$HOME/.cache}/towerserve/perf-libs"

    if [ -e "$site/nvidia/cuda_runtime/lib/libcudart.so.12" ]; then
        libs+=("$site/nvidia/cuda_runtime/lib")
    else
        lib="$(ls "$site"/nvidia_pytriton.libs/libcudart-*.so.12* 2>/dev/null | head -n 1)"
        if [ -z "$lib" ]; then
            echo "perf_env.sh: libcudart.so.12 not found;" \
                "run: $py -m pip install nvidia-cuda-runtime-cu12" >&2
            return 1
        fi
        mkdir -p "$shim" && ln -sfn "$lib" "$shim/libcudart.so.12" && use_shim=1
    fi

    if ! /sbin/ldconfig -p 2>/dev/null | grep -q 'libb64\.so\.0d'; then
        lib="$(ls "$site"/nvidia_pytriton.libs/libb64-*.so.0d 2>/dev/null | head -n 1)"
        if [ -z "$lib" ]; then
            echo "perf_env.sh: libb64.so.0d not found; run: apt-get install -y libb64-0d" >&2
            return 1
        fi
        mkdir -p "$shim" && ln -sfn "$lib" "$shim/libb64.so.0d" && use_shim=1
    fi
    [ "$use_shim" = 1 ] && libs+=("$shim")

    local joined
    joined="$(IFS=:; echo "${libs[*]}")"
    if [ -n "$joined" ]; then
        export LD_LIBRARY_PATH="$joined${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    fi
    case ":$PATH:" in
        *":$venv/bin:"*) ;;
        *) export PATH="$venv/bin:$PATH" ;;
    esac
}

_towerserve_perf_env
unset -f _towerserve_perf_env
