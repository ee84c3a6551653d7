# Shared by the download scripts: fetch one Google Drive file by id, or explain why not.
# Usage: gdrive_fetch ID OUTPUT_FILE DESCRIPTION
# The project's interpreter (.venv, where scripts/setup.sh installed gdown), else python3.
CAPPY_PYTHON="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.venv/bin/python"
[ -x "$CAPPY_PYTHON" ] || CAPPY_PYTHON=python3
gdrive_fetch() {
    local id="$1" out="$2" what="$3"
    local tmp="${out}.part"
    if [ -s "$out" ]; then
        echo "$out already present; delete it to download again."
        return 0
    fi
    if ! "$CAPPY_PYTHON" -c "import gdown" 2>/dev/null; then
        echo "error: gdown is not installed for $CAPPY_PYTHON (run bash scripts/setup.sh)." >&2
        return 1
    fi
    echo "Downloading $what (Google Drive id $id) to $out ..."
    if ! "$CAPPY_PYTHON" -m gdown "$id" -O "$tmp" || [ ! -s "$tmp" ]; then  # with its progress bar
        rm -f "$tmp"
        echo "error: could not download $what from Google Drive (id $id)." >&2
        echo "  Drive may be unreachable from this machine or the file's quota exceeded." >&2
        echo "  Download https://drive.google.com/uc?id=$id by hand and save it as $out." >&2
        return 1
    fi
    mv "$tmp" "$out"
}
