"""The latent-space explorer's server: its endpoints answer with the right shapes for each kind
of model, and every bad request is a 400 (or 404, 405) with a one-line JSON reason, never a 500
nor a file of the disk."""

from __future__ import annotations

import io
import json
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aevb.config.overrides import apply_overrides
from aevb.config.run import Config
from aevb.engine.loop import train
from aevb.serve.explorer import BadRequest, Explorer
from aevb.serve.server import make_server

TINY = {"dataset": "digits", "epochs": "1", "hidden": "16", "threads": "1",
        "precision": "float32", "is_samples": "4"}


def trained(tmp: Path, name: str, **overrides: str) -> Path:
    run = tmp / name
    train(apply_overrides(Config(), {**TINY, **overrides}), run, progress=False)
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("explore")
    return {"vae": trained(tmp, "vae", model="vae", latent_dim="3"),
            "cvae": trained(tmp, "cvae", model="cvae", latent_dim="2"),
            "hvae": trained(tmp, "hvae", model="hvae", latent_dims="3,2", layer_hidden="8",
                            inference="top-down", state_dim="8"),
            "ae": trained(tmp, "ae", model="ae", latent_dim="2")}


class Client:
    def __init__(self, explorer: Explorer) -> None:
        self.server = make_server(explorer)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def get(self, path: str, data: bytes | None = None, method: str | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, str, bytes]:
        request = urllib.request.Request(self.base + path, data=data, method=method,
                                         headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, response.headers["Content-Type"], response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.headers["Content-Type"], error.read()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def vae(runs):
    client = Client(Explorer(runs["vae"]))
    yield client
    client.close()


def image(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


def digit_png(size: int = 8) -> bytes:
    picture = Image.new("L", (size, size))
    picture.paste(255, (size // 3, 1, size // 3 + max(1, size // 4), size - 1))  # a "1"
    out = io.BytesIO()
    picture.save(out, format="PNG")
    return out.getvalue()


def test_info_orders_the_dimensions_by_their_kl(vae):
    status, kind, body = vae.get("/api/info")
    info = json.loads(body)
    assert status == 200 and kind == "application/json"
    assert info["latent_dim"] == 3 and info["image_shape"] == [1, 8, 8]
    kl = info["kl_per_dim"]
    assert [kl[j] for j in info["order"]] == sorted(kl, reverse=True)
    assert info["pad"] == info["order"][:2] and info["classes"] is None
    assert info["encoder"] is True and info["layers"] == [{"name": "z", "start": 0, "size": 3}]


def test_decode_follows_z(vae):
    status, kind, first = vae.get("/api/decode?z=0,0,0")
    assert status == 200 and kind == "image/png"
    _, _, other = vae.get("/api/decode?z=2.5,-2.5,1")
    assert image(first).shape == (8, 8)
    assert np.abs(image(first).astype(int) - image(other)).sum() > 0


def test_the_manifold_under_the_pad(vae):
    status, kind, grid = vae.get("/api/manifold?n=5")
    assert status == 200 and kind == "image/png" and image(grid).shape == (40, 40)
    assert vae.get("/api/manifold?n=33")[0] == 400
    assert vae.get("/api/manifold?n=4&z=0,nan,0")[0] == 400


def test_codes_interpolation_and_an_uploaded_drawing(vae):
    codes = json.loads(vae.get("/api/codes")[2])
    assert len(codes["points"]) == len(codes["labels"]) == len(codes["codes"])
    assert len(codes["codes"][0]) == 3 and len(codes["points"][0]) == 2
    status, _, strip = vae.get("/api/interpolate?a=0&b=5&steps=7&mode=slerp")
    assert status == 200 and image(strip).shape == (8, 8 * 7)
    status, _, body = vae.get("/api/encode", data=digit_png(28), method="POST")
    answer = json.loads(body)
    assert status == 200 and len(answer["code"]) == 3
    assert answer["reconstruction"].startswith("data:image/png;base64,")


@pytest.mark.parametrize("path", [
    "/api/decode?z=a,b,c", "/api/decode?z=nan,0,0", "/api/decode?z=inf,0,0",
    "/api/decode?z=0,0", "/api/decode?z=0,0,0,0", "/api/decode?z=11,0,0", "/api/decode",
    "/api/decode?z=0,0,0&label=1", "/api/decode?z=0,0,0&layer=1",
    "/api/decode?z=" + ",".join(["0"] * 5000),
    "/api/interpolate?a=0&b=1&steps=65", "/api/interpolate?a=0&b=1&steps=1",
    "/api/interpolate?a=0&b=1&steps=x", "/api/interpolate?a=-1&b=1",
    "/api/interpolate?a=0&b=99999", "/api/interpolate?a=0&b=1&mode=cubic",
    "/api/interpolate?a=" + "9" * 40 + "&b=1",
])
def test_a_bad_parameter_is_a_400_with_a_reason(vae, path):
    status, kind, body = vae.get(path)
    assert status == 400 and kind == "application/json"
    reason = json.loads(body)["error"]
    assert reason and "\n" not in reason


@pytest.mark.parametrize("path", ["/../../etc/passwd", "/static/../server.py", "/%2e%2e/x",
                                  "/explorer.py", "/api/nothing", "/static/app.js",
                                  "//etc/passwd", "/app.js/../../pyproject.toml"])
def test_only_its_own_files_and_endpoints_are_served(vae, path):
    status, kind, body = vae.get(path)
    assert status == 404 and kind == "application/json"
    assert b"root:" not in body and b"import" not in body


def test_the_page_and_its_files_are_served(vae):
    status, kind, page = vae.get("/")
    assert status == 200 and kind.startswith("text/html") and b"/app.js" in page
    assert b"http" not in page.replace(b"http-equiv", b"")  # nothing from elsewhere
    for path in ("/app.js", "/style.css"):
        assert vae.get(path)[0] == 200


def test_uploads_too_big_or_not_images_are_refused(vae):
    big = vae.get("/api/encode", data=b"\0" * (2 * 1024 * 1024 + 1), method="POST")
    assert big[0] == 400 and "MiB" in json.loads(big[2])["error"]
    junk = vae.get("/api/encode", data=b"not an image", method="POST")
    assert junk[0] == 400 and "not an image" in json.loads(junk[2])["error"]
    bomb = io.BytesIO()
    Image.new("1", (5000, 5000)).save(bomb, format="PNG")  # small file, 25 M pixels
    refused = vae.get("/api/encode", data=bomb.getvalue(), method="POST")
    assert refused[0] == 400 and "pixels" in json.loads(refused[2])["error"]
    assert vae.get("/api/encode", method="PUT", data=b"x")[0] == 405
    assert vae.get("/api/info", method="POST", data=b"x")[0] == 405


def test_a_conditional_model_decodes_each_class(runs):
    client = Client(Explorer(runs["cvae"]))
    try:
        info = json.loads(client.get("/api/info")[2])
        assert info["classes"] == 10
        zero = image(client.get("/api/decode?z=0,0&label=0")[2])
        seven = image(client.get("/api/decode?z=0,0&label=7")[2])
        assert np.abs(zero.astype(int) - seven).sum() > 0
        assert client.get("/api/decode?z=0,0&label=10")[0] == 400
        assert client.get("/api/decode?z=0,0&label=-1")[0] == 400
    finally:
        client.close()


def test_a_hierarchy_offers_its_layers(runs):
    client = Client(Explorer(runs["hvae"]))
    try:
        info = json.loads(client.get("/api/info")[2])
        assert [layer["name"] for layer in info["layers"]] == ["z1", "z2"]
        assert info["latent_dim"] == 5
        assert client.get("/api/decode?z=0,0,0,0,0&layer=1")[0] == 200
        assert client.get("/api/decode?z=0,0,0,0,0&layer=2")[0] == 400
    finally:
        client.close()


def test_a_model_without_a_decoder_is_one_clear_error(runs):
    with pytest.raises(BadRequest, match="has no decoder to explore"):
        Explorer(runs["ae"])


def test_the_run_directory_is_only_read(runs):
    before = {p: p.stat().st_mtime_ns for p in runs["vae"].rglob("*")}
    client = Client(Explorer(runs["vae"]))
    try:
        client.get("/api/decode?z=0,0,0")
        client.get("/api/codes")
    finally:
        client.close()
    assert {p: p.stat().st_mtime_ns for p in runs["vae"].rglob("*")} == before


def test_another_host_than_this_machine_is_a_warning(runs):
    with pytest.warns(UserWarning, match="not only this machine"):
        server = make_server(Explorer(runs["vae"]), host="0.0.0.0")
    server.server_close()
