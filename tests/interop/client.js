// A grpc-js client that knows people only through proto/people.proto.
//
// Usage: node client.js HOST:PORT PROTO_DIR
// Creates three users with BatchCreateUsers, reads them back with BatchGetUsers,
// lists them with a filtered, ordered ListUsers, tries a batch that repeats an
// email (then looks for what it would have added), and prints every answer (or the error's code and details) as one JSON object.
"use strict";

const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const [target, protoDir] = process.argv.slice(2);
const definition = protoLoader.loadSync("people.proto", {
  includeDirs: [protoDir],
  keepCase: true,
  longs: String,
  defaults: true,
});
const people = grpc.loadPackageDefinition(definition).people;
const client = new people.UserService(target, grpc.credentials.createInsecure());

function call(method, request) {
  return new Promise((resolve) => {
    client[method](request, (error, response) => {
      resolve(error ? { code: error.code, details: error.details } : response);
    });
  });
}

async function main() {
  const created = await call("BatchCreateUsers", {
    requests: [
      { name: "Grace Hopper", email: "grace@acme.com" },
      { name: "Ada Lovelace", email: "ada@example.com" },
      { name: "Alan Turing", email: "alan@acme.com" },
    ],
  });
  const ids = (created.users || []).map((user) => user.id);
  const fetched = await call("BatchGetUsers", { ids: [ids[2], ids[0]] });
  const listed = await call("ListUsers", {
    filter: 'email = "*@ACME.com"',
    order_by: "name desc",
    page_size: 10,
  });
  const repeated = await call("BatchCreateUsers", {
    requests: [
      { name: "New", email: "new@example.com" },
      { name: "Again", email: "ADA@example.com" },
    ],
  });
  const missing = await call("BatchGetUsers", { ids: [ids[0], "no-such-id"] });
  const after = await call("ListUsers", { filter: 'email = "new@example.com"' });
  console.log(JSON.stringify({ created, fetched, listed, repeated, missing, after }));
  client.close();
}

main();
