// Copies the browser builds the pages load from node_modules into static/vendor/.
const fs = require("fs");
const path = require("path");
const files = {
  "socket.io-client/dist/socket.io.min.js": "socket.io.min.js",
};
const out = path.join(__dirname, "vendor");
fs.mkdirSync(out, { recursive: true });
for (const [from, to] of Object.entries(files)) {
  fs.copyFileSync(path.join(__dirname, "node_modules", from), path.join(out, to));
}
console.log(`copied ${Object.keys(files).length} vendor file(s) to static/vendor`);
