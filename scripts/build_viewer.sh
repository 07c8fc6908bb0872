#!/usr/bin/env bash
# Rebuild mesh/vis/assets/viewer/viewer.bundle.js (three.js + GLTFLoader + OrbitControls + viewer.js, one minified file)
# from the npm registry with pinned versions. Needs node/npm; run it only after changing viewer.js.
set -euo pipefail
cd "$(dirname "$0")/.."
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
(cd "$build" && npm init -y >/dev/null && npm install --no-audit --no-fund three@0.187.0 esbuild@0.25.0 >/dev/null)
cp mesh/vis/assets/viewer/viewer.js "$build/viewer.js"
(cd "$build" && npx esbuild viewer.js --bundle --minify --format=iife --legal-comments=none --target=es2020 \
    --outfile=viewer.bundle.js)
cp "$build/viewer.bundle.js" mesh/vis/assets/viewer/viewer.bundle.js
cp "$build/node_modules/three/LICENSE" mesh/vis/assets/viewer/THREE_LICENSE
echo "wrote mesh/vis/assets/viewer/viewer.bundle.js ($(wc -c < mesh/vis/assets/viewer/viewer.bundle.js) bytes)"
