// Validate an AsyncAPI document with the official parser (@asyncapi/parser, the one the
// AsyncAPI CLI and Studio use): prints each diagnostic as one JSON line, exits 1 when the
// document did not parse into a valid AsyncAPI document.
import { readFileSync } from "node:fs";
import { Parser } from "@asyncapi/parser";

const path = process.argv[2];
const { document, diagnostics } = await new Parser().parse(readFileSync(path, "utf8"), {
  source: path,
});
for (const d of diagnostics) {
  const { severity, code, message, path: where } = d;
  console.log(JSON.stringify({ severity, code, message, path: where }));
}
process.exit(document ? 0 : 1);
