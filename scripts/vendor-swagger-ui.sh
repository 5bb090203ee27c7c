#!/bin/sh
# Fetches Swagger UI from the npm registry (the swagger-ui-dist package) and vendors the files
# the API docs page (/docs, edge_node/http/docs_page.py) serves into
# edge_node/http/docs_static/swagger-ui/, with its licence and a VERSION file recording the
# package, version, licence and the tarball's integrity. The node then serves them itself:
# no CDN, works offline. Usage: sh scripts/vendor-swagger-ui.sh [VERSION]   (make swagger-ui)
set -eu
version="${1:-5.36.0}"
target="$(dirname "$0")/../edge_node/http/docs_static/swagger-ui"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "swagger-ui-dist@$version" >/dev/null)
tar -xzf "$work"/swagger-ui-dist-"$version".tgz -C "$work"
rm -rf "$target"
mkdir -p "$target"
for file in swagger-ui-bundle.js swagger-ui-bundle.js.LICENSE.txt swagger-ui.css LICENSE NOTICE; do
    cp "$work/package/$file" "$target/$file"
done
integrity="$(cd "$work" && npm view "swagger-ui-dist@$version" dist.integrity)"
licence="$(cd "$work" && npm view "swagger-ui-dist@$version" license)"
cat > "$target/VERSION" <<END
package: swagger-ui-dist (npm registry)
version: $version
licence: $licence (LICENSE and NOTICE beside this file; bundled libraries: swagger-ui-bundle.js.LICENSE.txt)
integrity: $integrity
fetched by: scripts/vendor-swagger-ui.sh $version
END
echo "vendored swagger-ui-dist $version into $target" >&2
