"""viewer.html in a real headless browser (Debian's chromium through Selenium): it loads with no network, draws the
mesh, the scrubber changes the drawn frame, the ground-truth toggle works, and the console stays clean."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER),
                                reason="needs Debian's chromium and chromium-driver (.ci/run installs them)")


def _track(frames: int = 24):
    """A short track of the embedded body waving an arm, walking sideways, and its 'ground truth' shifted 5 cm."""
    from body_models import load_body_model
    from mesh.inference.predict import TrackPrediction
    from mesh.io.export import result_from_prediction
    from mesh.network.model import pose_body

    body = load_body_model()
    rot = torch.eye(3).repeat(frames, 24, 1, 1)
    angle = torch.linspace(0, 2.5, frames)
    c, s = torch.cos(angle), torch.sin(angle)
    rot[:, 16, 0, 0], rot[:, 16, 0, 1], rot[:, 16, 1, 0], rot[:, 16, 1, 1] = c, -s, s, c  # left shoulder
    rot[:, 0] = torch.tensor([[1.0, 0, 0], [0, -1, 0], [0, 0, -1]])  # camera frame: y down, facing the camera
    betas = torch.zeros(frames, 10)
    with torch.no_grad():
        out = pose_body(body, rot[None], betas[None])
    pred = TrackPrediction(rotmats=rot, betas=betas, vertices=out.vertices[0], joints_h36m=out.joints_h36m[0],
                           joints_smpl=out.joints_smpl[0])
    result = result_from_prediction(pred, body, fps=30.0)
    shift = np.stack([np.linspace(0, 0.6, frames), np.zeros(frames), np.full(frames, 3.0)], 1).astype(np.float32)
    for r in (result,):
        r.transl, r.vertices = r.transl + shift, r.vertices + shift[:, None]
        r.joints, r.joints_h36m = r.joints + shift[:, None], r.joints_h36m + shift[:, None]
    gt = result_from_prediction(pred, body, fps=30.0)
    gt.transl, gt.vertices = gt.transl + shift + 0.05, gt.vertices + shift[:, None] + 0.05
    gt.joints, gt.joints_h36m = gt.joints + shift[:, None] + 0.05, gt.joints_h36m + shift[:, None] + 0.05
    return body, result, gt


def _screenshot(driver) -> np.ndarray:
    import imageio.v3 as iio

    return iio.imread(io.BytesIO(base64.b64decode(driver.get_screenshot_as_base64())))[..., :3].astype(np.int16)


def test_viewer_plays_offline_in_headless_chromium(tmp_path: Path) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from mesh.vis.viewer import write_viewer

    body, result, gt = _track()
    errors = np.linspace(10, 40, len(result.frame_index))
    page = write_viewer(tmp_path / "viewer.html", result, body, gt=gt, errors_mm=errors, title="test track")
    assert page.stat().st_size < 6_000_000
    assert "http://" not in page.read_text().split('<script type="application/json"')[0]  # nothing fetched

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--enable-unsafe-swiftshader",
                "--use-angle=swiftshader", "--window-size=800,600", "--proxy-server=127.0.0.1:9",
                "--proxy-bypass-list=<-loopback>"):  # a dead proxy: any network request would fail
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        driver.get(page.as_uri())
        deadline = time.time() + 60
        while not driver.execute_script("return window.viewer && window.viewer.ready") and time.time() < deadline:
            time.sleep(0.2)
        assert driver.execute_script("return window.viewer.frames") == len(result.frame_index)
        driver.execute_script("window.viewer.setFrame(0)")
        time.sleep(0.3)
        first = _screenshot(driver)
        background = np.array([0xF2, 0xF2, 0xF2])
        covered = (np.abs(first - background).sum(-1) > 30)[:500]  # above the control bar
        assert covered.mean() > 0.01, covered.mean()  # the mesh is drawn
        driver.execute_script("window.viewer.setFrame(arguments[0])", len(result.frame_index) - 1)
        time.sleep(0.3)
        last = _screenshot(driver)
        assert (np.abs(last - first).sum(-1) > 30).mean() > 0.01  # another pose, further right: another frame
        assert driver.find_element("id", "play").text == "play"  # scrubbing pauses
        assert driver.execute_script("return window.viewer.frame()") == len(result.frame_index) - 1
        readout = driver.find_element("id", "error").text
        assert readout == f"MPVE: {errors[-1]:.1f} mm", readout
        driver.find_element("id", "show-gt").click()  # hide the ground truth
        time.sleep(0.3)
        assert (np.abs(_screenshot(driver) - last).sum(-1) > 30).mean() > 0.002
        scrub = driver.find_element("id", "scrub")
        assert scrub.get_attribute("max") == str(len(result.frame_index) - 1)
        # The page's own console and script errors (the software GL driver's performance notes about reading
        # pixels back for the screenshots are not the page's).
        logs = [entry for entry in driver.get_log("browser")
                if entry["level"] == "SEVERE" or entry.get("source") in ("console-api", "javascript")]
        assert not logs, json.dumps(logs)[:1000]
        shot = Path(os.environ.get("VIEWER_SCREENSHOT", tmp_path / "viewer.png"))  # kept for inspection
        shot.parent.mkdir(parents=True, exist_ok=True)
        shot.write_bytes(base64.b64decode(driver.get_screenshot_as_base64()))
    finally:
        driver.quit()
