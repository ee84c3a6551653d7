# Shared by the download scripts: fetch one Google Drive file by id, or explain why not.
# Usage: gdrive_fetch ID OUTPUT_FILE DESCRIPTION
gdrive_fetch() {
    local id="$1" out="$2" what="$3"
    local tmp="${out}.part"
    if [ -s "$out" ]; then
        echo "$out already present; delete it to download again."
        return 0
    fi
    if ! python -c "import gdown" 2>/dev/null; then
        echo "error: gdown is not installed (pip install -r requirements.txt)." >&2
        return 1
    fi
    echo "Downloading $what (Google Drive id $id) to $out ..."
    if ! python -m gdown --quiet "$id" -O "$tmp" || [ ! -s "$tmp" ]; then
        rm -f "$tmp"
        echo "error: could not download $what from Google Drive (id $id)." >&2
        echo "  Drive may be unreachable from this machine or the file's quota exceeded." >&2
        echo "  Download https://drive.google.com/uc?id=$id by hand and save it as $out." >&2
        return 1
    fi
    mv "$tmp" "$out"
}
