"""Files beside the session: PNG export with the node's parameters, autosave and crash
recovery."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from clp2p.model.session import Session
from clp2p.workflows import session_io


def node_parameters(session: Session, node_id: str) -> dict:
    """What made a node's image: model, settings, and every prompt and parameter from the
    root to the node."""
    return {
        "model": session.model,
        "settings": session.settings.to_json(),
        "chain": [
            {
                "id": n.id,
                "kind": n.kind,
                "prompt": n.prompt,
                "params": n.params.to_json() if n.params else None,
            }
            for n in session.path(node_id)
        ],
    }


def export_png(path: str | Path, image: np.ndarray, session: Session, node_id: str) -> None:
    """Write the image with its parameters as a PNG text chunk ``clp2p``."""
    info = PngInfo()
    info.add_text("clp2p", json.dumps(node_parameters(session, node_id)))
    info.add_text("Software", "clp2p Studio")
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    Image.fromarray(image).save(tmp, format="PNG", pnginfo=info)
    os.replace(tmp, path)


class Recovery:
    """Autosave to ``data_dir/autosave/session.json``; a marker file says the studio is
    running, so a marker left behind at start means the last run did not end cleanly."""

    def __init__(self, data_dir: str | Path) -> None:
        self.dir = Path(data_dir) / "autosave"
        self.file = self.dir / "session.json"
        self.marker = self.dir / "running"

    def crashed_with_autosave(self) -> bool:
        return self.marker.exists() and self.file.exists()

    def mark_running(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.marker.write_text(str(os.getpid()))

    def save(self, doc) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        session_io.save(doc.session, self.file, doc.images)

    def load(self):
        return session_io.load(self.file)

    def clear(self) -> None:
        self.file.unlink(missing_ok=True)
        folder = self.dir / "session.images"
        if folder.is_dir():
            for f in folder.iterdir():
                f.unlink()
            folder.rmdir()

    def clean_exit(self) -> None:
        self.clear()
        self.marker.unlink(missing_ok=True)
