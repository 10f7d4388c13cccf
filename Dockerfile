# The fastmesh image: the `fastmesh` CLI as entrypoint (`start --config FILE`, `sample-service`, ...).
#
# node:22-bookworm-slim: Node 22 is the maintained LTS line that meets package.json's
# engines (>= 20.18.1); Node 20 is past its end of life (April 2026). Bookworm, as the
# machines the tests run on.
#
#   docker build -t fastmesh .
#   docker run --rm fastmesh validate /app/mesh/edge.yaml

# --- build: every dependency, then tsc to dist/ ------------------------------------------
FROM node:22-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
# --ignore-scripts: npm's `prepare` would run tsc before the sources are here.
RUN npm ci --ignore-scripts
COPY tsconfig.json ./
COPY src ./src
COPY plugins ./plugins
COPY test ./test
COPY bench ./bench
RUN npx tsc -p tsconfig.json

# --- runtime: production dependencies and the compiled code only -------------------------
FROM node:22-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts && npm cache clean --force
COPY --from=build /app/dist/src ./dist/src
COPY --from=build /app/dist/plugins ./dist/plugins
# Read at run time from beside dist/: the service-graph page (src/admin/service-graph-page.ts)
# and the configs (`fastmesh demo` reads config/demo.yaml; the local mesh's are in mesh/).
COPY src/admin/service-graph.html ./src/admin/service-graph.html
COPY config ./config
COPY mesh ./mesh
# The unprivileged user of the Node images.
USER node
# The admin API's /ready (no token needed); FASTMESH_ADMIN_PORT when the port is moved.
# No curl in the slim image: Node's fetch.
HEALTHCHECK --interval=5s --timeout=3s --start-period=20s --retries=5 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.FASTMESH_ADMIN_PORT || 15000) + '/ready').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["node", "dist/src/cli/index.js"]
CMD ["--help"]
