// The self-contained result viewer (mesh.vis.viewer writes it into viewer.html with the animated meshes as embedded glb).
// Built into viewer.bundle.js by scripts/build_viewer.sh (three.js from npm, bundled offline with esbuild).
import * as THREE from "three";
import { GLTFLoader } from "three/examples/jsm/loaders/GLTFLoader.js";
import { OrbitControls } from "three/examples/jsm/controls/OrbitControls.js";

function decode(b64) {
  const bin = atob(b64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return bytes.buffer;
}

function parseGlb(loader, b64) {
  return new Promise((resolve, reject) => loader.parse(decode(b64), "", resolve, reject));
}

async function main() {
  const data = JSON.parse(document.getElementById("viewer-data").textContent);
  const canvas = document.getElementById("view");
  const renderer = new THREE.WebGLRenderer({ canvas, antialias: true, preserveDrawingBuffer: true });
  renderer.setPixelRatio(window.devicePixelRatio || 1);
  const scene = new THREE.Scene();
  scene.background = new THREE.Color(0xf2f2f2);
  scene.add(new THREE.HemisphereLight(0xffffff, 0x667788, 2.2));
  const key = new THREE.DirectionalLight(0xffffff, 1.6);
  key.position.set(-2, 4, 3);
  scene.add(key);
  const camera = new THREE.PerspectiveCamera(40, 1, 0.05, 500);
  const controls = new OrbitControls(camera, canvas);

  const loader = new GLTFLoader();
  const layers = [];
  for (const [name, b64, color, opacity] of [["prediction", data.pred_glb, 0xa6bcda, 1.0],
                                              ["ground truth", data.gt_glb, 0x8cd18c, 0.55]]) {
    if (!b64) continue;
    const gltf = await parseGlb(loader, b64);
    gltf.scene.traverse((o) => {
      if (o.isMesh) {
        o.material = new THREE.MeshStandardMaterial({ color, roughness: 0.7, transparent: opacity < 1, opacity });
        o.frustumCulled = false;  // skinned: the bind-pose bounds do not follow the animation
      }
    });
    scene.add(gltf.scene);
    const mixer = new THREE.AnimationMixer(gltf.scene);
    const action = gltf.animations.length ? mixer.clipAction(gltf.animations[0]) : null;
    if (action) {
      action.setLoop(THREE.LoopOnce, 1);  // the viewer loops itself; LoopRepeat would show frame 0 at the end time
      action.clampWhenFinished = true;
      action.play();
    }
    layers.push({ name, root: gltf.scene, mixer, action });
  }

  // Frame the track: the orbit target is the middle of the person's path, the camera in front of it.
  const frames = data.frames;
  const fps = data.fps;
  const box = new THREE.Box3();
  // The pose at time t (seconds from the first frame): set the clip time directly (a finished LoopOnce action no
  // longer advances through mixer.setTime).
  function pose(layer, t) {
    if (!layer.action) return;
    layer.action.paused = false;
    layer.action.time = Math.min(t, layer.action.getClip().duration);
    layer.mixer.update(0);
  }
  for (const t of [0, 0.5, 1]) {
    const i = Math.round(t * (frames.length - 1));
    pose(layers[0], (frames[i] - frames[0]) / fps);
    layers[0].root.updateMatrixWorld(true);
    box.expandByObject(layers[0].root, true);
  }
  const centre = box.getCenter(new THREE.Vector3());
  const size = box.getSize(new THREE.Vector3()).length();
  controls.target.copy(centre);
  camera.position.copy(centre).add(new THREE.Vector3(0, 0.15 * size, 1.4 * size + 1.5));
  controls.update();

  const ui = {
    play: document.getElementById("play"), scrub: document.getElementById("scrub"),
    frame: document.getElementById("frame"), speed: document.getElementById("speed"),
    gt: document.getElementById("show-gt"), err: document.getElementById("error"),
  };
  ui.scrub.max = String(frames.length - 1);
  if (!data.gt_glb) ui.gt.parentElement.style.display = "none";
  let index = 0, playing = true, clock = 0, last = performance.now();

  function show(i) {
    index = Math.max(0, Math.min(frames.length - 1, i));
    const t = (frames[index] - frames[0]) / fps;
    for (const layer of layers) pose(layer, t);
    if (layers[1]) layers[1].root.visible = ui.gt.checked;
    ui.scrub.value = String(index);
    ui.frame.textContent = `frame ${frames[index]} (${index + 1} / ${frames.length})`;
    if (data.errors_mm) {
      const e = data.errors_mm[index];
      ui.err.textContent = `${data.error_name}: ${e === null ? "n/a" : e.toFixed(1) + " mm"}`;
    }
    renderer.render(scene, camera);
  }
  ui.play.onclick = () => { playing = !playing; ui.play.textContent = playing ? "pause" : "play"; };
  ui.scrub.oninput = () => { playing = false; ui.play.textContent = "play"; clock = 0; show(Number(ui.scrub.value)); };
  ui.gt.onchange = () => show(index);

  function resize() {
    const w = canvas.clientWidth, h = canvas.clientHeight;
    renderer.setSize(w, h, false);
    camera.aspect = w / Math.max(h, 1);
    camera.updateProjectionMatrix();
  }
  window.addEventListener("resize", () => { resize(); show(index); dirty = true; });
  resize();
  // Draw only when something changed (a new frame, the camera moved): idle pages cost no CPU.
  let dirty = true;
  controls.addEventListener("change", () => { dirty = true; });
  function tick(now) {
    const dt = (now - last) / 1000;
    last = now;
    if (playing) {
      clock += dt * Number(ui.speed.value) * fps;
      if (clock >= 1) { const step = Math.floor(clock); clock -= step; show((index + step) % frames.length); }
    }
    controls.update();
    if (dirty) { renderer.render(scene, camera); dirty = false; }
    requestAnimationFrame(tick);
  }
  show(0);
  const pause = () => { playing = false; ui.play.textContent = "play"; };
  window.viewer = { ready: true, frames: frames.length, setFrame: (i) => { pause(); show(i); },
                    frame: () => index, pause };
  requestAnimationFrame(tick);
}

main().catch((err) => {
  console.error(err);
  document.getElementById("error").textContent = `viewer error: ${err}`;
});
