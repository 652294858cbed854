#!/usr/bin/env node
// A CartPole simulator in Node.js (standard library only) that learns through a lightning-rl
// policy server. Written from docs/external_env_protocol.md alone: it shares no code with the
// Python client, runs the CartPole-v1 dynamics itself and asks the server for every action
// (remote inference) in JSON frames.
//
//   LIGHTNING_RL_EXTERNAL_TOKEN=... node examples/external_cartpole/node_client.mjs \
//       --address 127.0.0.1:9900 [--seed 1] [--episodes 50] [--seconds 60]
//   node examples/external_cartpole/node_client.mjs --address-file /tmp/server.json --token ...
//
// It plays episodes until --episodes/--seconds are used up or the server shuts down
// (`server_closing`, or the connection closes), then prints one JSON line:
// {"client": seed, "episodes": n, "steps": s, "mean_return": r, "first_returns": [...], "last_returns": [...]}
// (up to 10 each, never the same episode twice: with fewer than 20, each holds half of them).

import fs from "node:fs";
import net from "node:net";
import process from "node:process";

const JSON_ENCODING = 1;
const HEADER_BYTES = 5; // uint32 big-endian body length + uint8 encoding

// -- CartPole-v1 (gymnasium's classic_control/cartpole.py, Euler integration) -------------------
const GRAVITY = 9.8;
const MASS_CART = 1.0;
const MASS_POLE = 0.1;
const TOTAL_MASS = MASS_CART + MASS_POLE;
const HALF_POLE_LENGTH = 0.5;
const POLE_MASS_LENGTH = MASS_POLE * HALF_POLE_LENGTH;
const FORCE_MAG = 10.0;
const TAU = 0.02;
const THETA_LIMIT = (12 * 2 * Math.PI) / 360;
const X_LIMIT = 2.4;
const MAX_EPISODE_STEPS = 500; // CartPole-v1's TimeLimit

// mulberry32: a small seeded generator, so a client's episodes are reproducible from --seed.
function makeRng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

class CartPole {
  constructor(seed) {
    this.rng = makeRng(seed);
    this.state = [0, 0, 0, 0];
    this.steps = 0;
  }

  reset() {
    this.state = this.state.map(() => this.rng() * 0.1 - 0.05); // uniform(-0.05, 0.05)
    this.steps = 0;
    return [...this.state];
  }

  // Returns [observation, reward, terminated, truncated], like gymnasium's step().
  step(action) {
    let [x, xDot, theta, thetaDot] = this.state;
    const force = action === 1 ? FORCE_MAG : -FORCE_MAG;
    const cos = Math.cos(theta);
    const sin = Math.sin(theta);
    const temp = (force + POLE_MASS_LENGTH * thetaDot * thetaDot * sin) / TOTAL_MASS;
    const thetaAcc =
      (GRAVITY * sin - cos * temp) /
      (HALF_POLE_LENGTH * (4.0 / 3.0 - (MASS_POLE * cos * cos) / TOTAL_MASS));
    const xAcc = temp - (POLE_MASS_LENGTH * thetaAcc * cos) / TOTAL_MASS;
    x += TAU * xDot;
    xDot += TAU * xAcc;
    theta += TAU * thetaDot;
    thetaDot += TAU * thetaAcc;
    this.state = [x, xDot, theta, thetaDot];
    this.steps += 1;
    const terminated = x < -X_LIMIT || x > X_LIMIT || theta < -THETA_LIMIT || theta > THETA_LIMIT;
    const truncated = !terminated && this.steps >= MAX_EPISODE_STEPS;
    return [[...this.state], 1.0, terminated, truncated];
  }
}

// -- the protocol -------------------------------------------------------------------------------
class ServerClosed extends Error {}

class Connection {
  constructor(socket) {
    this.socket = socket;
    this.buffer = Buffer.alloc(0);
    this.waiting = null; // {resolve, reject} of the one request in flight
    this.closedError = null;
    socket.setNoDelay(true);
    socket.on("data", (chunk) => {
      this.buffer = Buffer.concat([this.buffer, chunk]);
      this.deliver();
    });
    const closed = (why) => {
      if (!this.closedError) this.closedError = new ServerClosed(why);
      this.fail(this.closedError);
    };
    socket.on("end", () => closed("the server closed the connection"));
    socket.on("close", () => closed("the connection closed"));
    socket.on("error", (err) => closed(`socket error: ${err.code || err.message}`));
  }

  // Connect, retrying with exponential backoff: the server listens only once training started.
  static async open(host, port, deadlineMs) {
    let delay = 100;
    for (;;) {
      try {
        const socket = await new Promise((resolve, reject) => {
          const s = net.createConnection({ host, port }, () => {
            s.removeListener("error", reject);
            resolve(s);
          });
          s.once("error", reject);
        });
        return new Connection(socket);
      } catch (err) {
        if (Date.now() + delay > deadlineMs) {
          throw new Error(`cannot reach the server at ${host}:${port}: ${err.code || err.message}`);
        }
        await sleep(delay);
        delay = Math.min(delay * 2, 2000);
      }
    }
  }

  fail(error) {
    const waiting = this.waiting;
    this.waiting = null;
    if (waiting) waiting.reject(error);
  }

  deliver() {
    if (this.buffer.length < HEADER_BYTES || !this.waiting) return;
    const length = this.buffer.readUInt32BE(0);
    const encoding = this.buffer.readUInt8(4);
    if (this.buffer.length < HEADER_BYTES + length) return;
    const body = this.buffer.subarray(HEADER_BYTES, HEADER_BYTES + length);
    this.buffer = this.buffer.subarray(HEADER_BYTES + length);
    const waiting = this.waiting;
    this.waiting = null;
    if (encoding !== JSON_ENCODING) {
      waiting.reject(new Error(`unexpected reply encoding ${encoding}`));
      return;
    }
    const reply = JSON.parse(body.toString("utf8"));
    if (reply.type === "error") {
      const error = reply.code === "server_closing" ? new ServerClosed("server_closing") : null;
      waiting.reject(error || new Error(`server error ${reply.code}: ${reply.message}`));
      return;
    }
    waiting.resolve(reply);
  }

  // One request in flight: send, then wait for its one reply (held replies may take a while).
  request(message, timeoutMs = 120000) {
    if (this.closedError) return Promise.reject(this.closedError);
    const body = Buffer.from(JSON.stringify(message), "utf8");
    const header = Buffer.alloc(HEADER_BYTES);
    header.writeUInt32BE(body.length, 0);
    header.writeUInt8(JSON_ENCODING, 4);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting = null;
        reject(new Error(`no reply to ${message.type} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiting = {
        resolve: (reply) => {
          clearTimeout(timer);
          resolve(reply);
        },
        reject: (err) => {
          clearTimeout(timer);
          reject(err);
        },
      };
      this.socket.write(Buffer.concat([header, body]));
      this.deliver();
    });
  }

  close() {
    this.socket.destroy();
  }
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function parseArgs(argv) {
  const args = { seed: 0, episodes: Infinity, seconds: Infinity, token: process.env.LIGHTNING_RL_EXTERNAL_TOKEN };
  for (let i = 0; i < argv.length; i += 2) {
    const [key, value] = [argv[i], argv[i + 1]];
    if (value === undefined) throw new Error(`${key} needs a value`);
    if (key === "--address") args.address = value;
    else if (key === "--address-file") args.addressFile = value;
    else if (key === "--token") args.token = value;
    else if (key === "--seed") args.seed = Number.parseInt(value, 10);
    else if (key === "--episodes") args.episodes = Number.parseInt(value, 10);
    else if (key === "--seconds") args.seconds = Number.parseFloat(value);
    else if (key === "--connect-timeout") args.connectTimeout = Number.parseFloat(value);
    else throw new Error(`unknown option ${key}`);
  }
  if (!args.address && !args.addressFile) throw new Error("--address host:port or --address-file is required");
  if (!args.token) throw new Error("--token (or $LIGHTNING_RL_EXTERNAL_TOKEN) is required");
  return args;
}

// The address file appears once the server listens (written atomically: whole or absent).
async function readAddressFile(path, deadlineMs) {
  while (!fs.existsSync(path)) {
    if (Date.now() > deadlineMs) throw new Error(`no server address file ${path}`);
    await sleep(100);
  }
  const { host, port } = JSON.parse(fs.readFileSync(path, "utf8"));
  return `${host}:${port}`;
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const deadlineMs = Date.now() + 1000 * (args.connectTimeout ?? 120);
  const address = args.address || (await readAddressFile(args.addressFile, deadlineMs));
  const split = address.lastIndexOf(":");
  const conn = await Connection.open(address.slice(0, split), Number(address.slice(split + 1)), deadlineMs);
  const returns = [];
  let steps = 0;
  try {
    await conn.request({ type: "hello", protocol_version: 1, token: args.token });
    const config = await conn.request({ type: "get_config" });
    const obsSpace = config.observation_space;
    const actSpace = config.action_space;
    if (obsSpace.type !== "Box" || obsSpace.shape.join() !== "4" || actSpace.type !== "Discrete" || actSpace.n !== 2) {
      throw new Error(`the server's spaces are not CartPole's: ${JSON.stringify([obsSpace, actSpace])}`);
    }
    const start = actSpace.start ?? 0;
    const env = new CartPole(args.seed);
    const stopAt = Date.now() + 1000 * args.seconds;
    while (returns.length < args.episodes && Date.now() < stopAt) {
      const { episode_id: episodeId } = await conn.request({ type: "start_episode" });
      let observation = env.reset();
      let reward = 0; // the first get_action carries no reward: no action earned one yet
      let total = 0;
      let done = false;
      let terminated = false;
      let truncated = false;
      while (!done) {
        // The previous action's reward travels with the next observation (no log_returns).
        const reply = await conn.request({ type: "get_action", episode_id: episodeId, observation, reward });
        [observation, reward, terminated, truncated] = env.step(reply.action - start);
        total += reward;
        steps += 1;
        done = terminated || truncated;
      }
      await conn.request({ type: "end_episode", episode_id: episodeId, observation, reward, terminated, truncated });
      returns.push(total);
    }
  } catch (err) {
    if (!(err instanceof ServerClosed)) throw err; // the run ended: a simulator just stops
  } finally {
    conn.close();
  }
  const mean = returns.length ? returns.reduce((a, b) => a + b, 0) / returns.length : null;
  const k = Math.min(10, Math.floor(returns.length / 2));
  const report = {
    client: args.seed,
    episodes: returns.length,
    steps,
    mean_return: mean,
    first_returns: returns.slice(0, k),
    last_returns: k ? returns.slice(-k) : [],
  };
  console.log(JSON.stringify(report));
}

main().catch((err) => {
  console.error(`node client: ${err.message}`);
  process.exit(1);
});
