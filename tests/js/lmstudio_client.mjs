// LM Studio's own JavaScript SDK (`@lmstudio/sdk`) against an lms daemon: node lmstudio_client.mjs WS_URL CHAT EMBEDDING
// Prints one JSON object with what each call gave back (tests/test_lmstudio_js.py checks it).
import { LMStudioClient } from "@lmstudio/sdk";

const [baseUrl, chatModel, embeddingModel] = process.argv.slice(2);
// The SDK logs to stdout; send it to stderr so that stdout is the one JSON object.
const log = (...args) => console.error(...args);
const client = new LMStudioClient({ baseUrl, logger: { info: log, warn: log, error: log, debug: log } });
const config = { maxTokens: 8, temperature: 0 };
const out = {};

// A call the server never answers would hang the SDK forever: give up on it and say so instead.
function within(seconds, promise) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${seconds}s`)), seconds * 1000);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

out.downloaded = (await client.system.listDownloadedModels()).map((m) => ({ modelKey: m.modelKey, type: m.type }));
out.loaded = (await client.llm.listLoaded()).map((m) => m.identifier);
const model = await client.llm.model(chatModel);
out.identifier = model.identifier;
const result = await model.respond([{ role: "user", content: "Say hello." }], config);
out.respond = {
  content: result.content,
  stopReason: result.stats.stopReason,
  predictedTokensCount: result.stats.predictedTokensCount,
  promptTokensCount: result.stats.promptTokensCount,
  modelKey: result.modelInfo.modelKey,
};
const fragments = [];
const prediction = model.respond([{ role: "user", content: "Say hello." }], config);
for await (const fragment of prediction) {
  fragments.push(fragment.content);
}
const streamed = await prediction.result();
out.streamed = { fragments: fragments.length, joined: fragments.join(""), content: streamed.content,
                 stopReason: streamed.stats.stopReason };
out.contextLength = await model.getContextLength();
out.tokens = (await model.tokenize("Hello world")).length;
out.countTokens = await model.countTokens("Hello world");
const embedder = await client.embedding.model(embeddingModel);
out.embed = [(await embedder.embed("a cat")).embedding.length, (await embedder.embed("a dog")).embedding.length];
out.embeddingContextLength = await embedder.getContextLength();
out.loadedEmbedding = (await client.embedding.listLoaded()).map((m) => m.identifier);
try {
  await within(60, client.llm.model("no-such-model"));
  out.missing = "no error";
} catch (error) {
  out.missing = { message: String(error.message ?? error) };
}
await client[Symbol.asyncDispose]?.();
console.log(JSON.stringify(out));
process.exit(0);
