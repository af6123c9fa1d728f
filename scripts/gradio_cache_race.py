"""Evidence for issue 27's dropped connections, in one process: Gradio's `save_pil_to_cache` (what an Image or Gallery
output handed an array goes through) rewrites the file named by the picture's content in place (`write_bytes`: the
file is truncated, then written), so while another request for the same picture rewrites it, a reader that does what
Starlette's FileResponse does (stat the file for Content-Length, then read it) gets a size that disagrees with the
bytes, or a partial file. Prints the counts over a few seconds.

    python scripts/gradio_cache_race.py
"""

from __future__ import annotations

import os
import tempfile
import threading
import time

import numpy as np
from gradio import processing_utils
from PIL import Image


def main(seconds: float = 3.0) -> None:
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8))
    cache = tempfile.mkdtemp()
    path = processing_utils.save_pil_to_cache(img, cache)
    full = os.path.getsize(path)
    stop = time.time() + seconds

    def rewrite() -> None:  # other visitors getting the same picture
        while time.time() < stop:
            processing_utils.save_pil_to_cache(img, cache)

    writer = threading.Thread(target=rewrite)
    writer.start()
    reads = lying = partial = 0
    while time.time() < stop:  # a request serving it: Content-Length from stat, then the bytes
        size = os.stat(path).st_size
        with open(path, "rb") as fh:
            data = fh.read()
        reads += 1
        lying += len(data) != size
        partial += size < full
    writer.join()
    print(f"picture file {full} bytes; {reads} stat+read pairs while it was being rewritten: {lying} where the "
          f"bytes read disagree with the size stat gave (a wrong Content-Length: the server drops the connection), "
          f"{partial} where stat saw a partial file (a truncated picture served as if whole)")


if __name__ == "__main__":
    main()
