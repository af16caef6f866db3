#!/usr/bin/env bash
# Vendor a pinned GOV.UK Frontend release into web/static/govuk (committed, so running the
# service never needs npm or the network). Re-run after changing VERSION, then commit.
#
# The stylesheet is compiled here rather than copied: GOV.UK's GDS Transport font may be used
# only on GOV.UK domains, and councils and police forces are not, so it is built with Arial
# (as the Design System advises for services outside GOV.UK) and no font files are shipped.
set -euo pipefail
VERSION=6.3.0
SASS=1.93.2
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(
  cd "$work"
  npm init -y >/dev/null
  npm install --silent --no-audit --no-fund "govuk-frontend@$VERSION" "sass@$SASS" >/dev/null
  cat > app.scss <<'SCSS'
$govuk-font-family: arial, sans-serif;
$govuk-assets-path: "/static/govuk/assets/";
@import "node_modules/govuk-frontend/dist/govuk/index";
SCSS
  npx sass --quiet --no-source-map --style=compressed --load-path=. app.scss govuk-frontend.min.css
)
dist="$work/node_modules/govuk-frontend/dist/govuk"
target=web/static/govuk
rm -rf "$target"
mkdir -p "$target/assets"
cp "$work/govuk-frontend.min.css" "$dist/govuk-frontend.min.js" "$target/"
cp -r "$dist/assets/images" "$dist/assets/manifest.json" "$target/assets/"
cp "$work/node_modules/govuk-frontend/LICENSE.txt" "$target/LICENSE.txt" 2>/dev/null || true
echo "govuk-frontend $VERSION, compiled with sass $SASS and Arial" > "$target/VERSION"
echo "vendored govuk-frontend $VERSION into $target"
