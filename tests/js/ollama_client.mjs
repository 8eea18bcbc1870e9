// The official `ollama` JavaScript client against an lms server: node ollama_client.mjs BASE_URL CHAT EMBEDDING
// Prints one JSON object with what each call gave back (tests/test_ollama_js.py checks it).
import { Ollama } from "ollama";

const [host, chatModel, embeddingModel] = process.argv.slice(2);
const ollama = new Ollama({ host });
const options = { num_predict: 8, temperature: 0 };
const out = {};

out.version = (await ollama.version()).version;
out.models = (await ollama.list()).models.map((model) => model.name);
out.show = (await ollama.show({ model: chatModel })).capabilities;
const reply = await ollama.chat({ model: chatModel, messages: [{ role: "user", content: "Say hello." }], options });
out.chat = { content: reply.message.content, done: reply.done, eval_count: reply.eval_count };
let streamed = "";
let last = null;
for await (const part of await ollama.chat({ model: chatModel, messages: [{ role: "user", content: "Say hello." }],
                                            options, stream: true })) {
  streamed += part.message.content;
  last = part;
}
out.streamed = { content: streamed, done: last.done, done_reason: last.done_reason };
out.generate = (await ollama.generate({ model: chatModel, prompt: "The sky is", raw: true, options })).response;
out.embed = (await ollama.embed({ model: embeddingModel, input: ["a cat", "a dog"] })).embeddings.map((e) => e.length);
out.ps = (await ollama.ps()).models.map((model) => model.name);
try {
  await ollama.chat({ model: "no-such-model", messages: [{ role: "user", content: "hi" }] });
  out.missing = "no error";
} catch (error) {
  out.missing = { status: error.status_code, error: error.error };
}
console.log(JSON.stringify(out));
