"""MMHal-Bench and LLaVA-Bench judging through a fake OpenAI-compatible server on loopback and through tiny
local causal LMs (built in-process, loaded with the same from_pretrained code a real judge goes through)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from mfpo.eval.config import JudgeConfig
from mfpo.eval.judge import HFChatJudge, JudgeError, OpenAIChatJudge
from mfpo.eval.llava_bench import SYSTEM, rules, score_llava_bench_files
from mfpo.eval.mmhal import fill_template, mmhal_prompt, rubric, score_mmhal_files
from mfpo.eval.ratings import parse_mmhal_rating, parse_score_pair
from mfpo.eval.rows import read_rows

DATA = Path(__file__).parent / "data" / "eval"


class FakeChatServer:
    """``POST /v1/chat/completions`` on 127.0.0.1: replies from ``answer(body)``, records every request, and
    answers the first ``fail_first`` requests with HTTP 429."""

    def __init__(self, answer: Callable[[dict[str, Any]], str], fail_first: int = 0) -> None:
        self.requests: list[dict[str, Any]] = []
        self.fail_first = fail_first
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append({"path": self.path, "auth": self.headers.get("Authorization"),
                                        "body": body})
                if len(server.requests) <= server.fail_first:
                    self._send(429, {"error": {"message": "rate limited"}})
                    return
                self._send(200, {"id": "x", "object": "chat.completion", "model": body["model"],
                                 "choices": [{"index": 0, "finish_reason": "stop",
                                              "message": {"role": "assistant", "content": answer(body)}}]})

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve() -> Iterator[Callable[..., FakeChatServer]]:
    servers: list[FakeChatServer] = []

    def start(answer: Callable[[dict[str, Any]], str], fail_first: int = 0) -> FakeChatServer:
        servers.append(FakeChatServer(answer, fail_first))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def _judge(server: FakeChatServer, **options: Any) -> OpenAIChatJudge:
    return OpenAIChatJudge(JudgeConfig(base_url=server.url, api_key="sk-test", model="judge-1", retry_backoff_s=0.0,
                                       **options))


def _mmhal_answers(tmp_path: Path) -> Path:
    answers = tmp_path / "answers.jsonl"
    answers.write_text("".join(json.dumps(a) + "\n" for a in [
        {"question_id": "a1", "text": "The cat is black."},
        {"question_id": "a2", "text": "The dog is eating a bone."},
        {"question_id": "a3", "text": "I cannot tell."},
    ]))
    return answers


def _mmhal_reply(body: dict[str, Any]) -> str:
    content = body["messages"][-1]["content"]
    response = content.split("### LMM Response to Evaluate\n")[1]
    if "black" in response:
        return "The response matches the image.\nRating: 5, very informative, no hallucination"
    if "bone" in response:
        return "There is no bone.\n**Rating:** 1"
    return "I am not sure how to rate this."


# --- reading verdicts ------------------------------------------------------------------------


@pytest.mark.parametrize(("reply", "rating", "status"), [
    ("Explanation. Rating: 5, very informative, no hallucination", 5, "ok"),
    ("**Rating:** 4", 4, "ok"),
    ("Rating: [2]", 2, "ok"),
    ("- Rating: 6, very informative\n- Rating: 3, not informative\nMy verdict. Rating: 1", 1, "last-of-many"),
    ("Rating: 10", None, "none"),
    ("no verdict at all", None, "none"),
])
def test_mmhal_rating_parsing(reply, rating, status):
    assert parse_mmhal_rating(reply) == (rating, status)


@pytest.mark.parametrize(("reply", "pair"), [
    ("8 6\nAssistant 1 is better.", (8.0, 6.0)),
    ("7.5 9", (7.5, 9.0)),
    ("7, 7", (7.0, 7.0)),                       # the reference's split gives 3 parts here and fails
    ("Assistant 1: 7, Assistant 2: 8", (7.0, 8.0)),
    ("Scores: 7 8 9", None),
    ("", None),
])
def test_llava_bench_score_pair_parsing(reply, pair):
    assert parse_score_pair(reply) == pair


# --- MMHal-Bench through an OpenAI-compatible endpoint ---------------------------------------


def test_mmhal_through_an_openai_compatible_server(serve, tmp_path):
    server = serve(_mmhal_reply, fail_first=1)
    result = score_mmhal_files(_mmhal_answers(tmp_path), DATA / "mmhal_template.json", _judge(server),
                               tmp_path / "reviews.jsonl")
    # ratings 5, 1 and (no rating ->) 0: mean 2.0; ratings below 3 are hallucinations: 2 of 3
    assert [r["rating"] for r in result["reviews"]] == [5, 1, None]
    assert result["score"] == pytest.approx(2.0)
    assert result["hal_rate"] == pytest.approx(100 * 2 / 3)
    assert result["per_type"] == {"attribute": 5.0, "adversarial": 1.0, "counting": 0.0}
    assert (result["unparsed"], result["n"]) == (1, 3)
    # the first request was rate-limited and retried; then one request per record
    assert len(server.requests) == 4
    first = server.requests[1]
    assert first["path"] == "/v1/chat/completions" and first["auth"] == "Bearer sk-test"
    assert first["body"]["model"] == "judge-1" and first["body"]["temperature"] == 0.0
    template = read_rows(DATA / "mmhal_template.json")
    filled = fill_template(template, read_rows(_mmhal_answers(tmp_path)))
    assert first["body"]["messages"] == [{"role": "user", "content": mmhal_prompt(filled[0])}]
    assert mmhal_prompt(filled[0]) == rubric().format("Cat, Animal", "What color is the cat?", "The cat is black.",
                                                      "The cat is black.")
    assert rubric().startswith("Please act as an impartial and objective judge") and "Rating: 6, very informative " \
        "with good analysis or reasoning, no hallucination" in rubric()


def test_mmhal_reviews_are_cached_and_resumed(serve, tmp_path):
    server = serve(_mmhal_reply)
    judge, answers = _judge(server), _mmhal_answers(tmp_path)
    first = score_mmhal_files(answers, DATA / "mmhal_template.json", judge, tmp_path / "reviews.jsonl")
    again = score_mmhal_files(answers, DATA / "mmhal_template.json", judge, tmp_path / "reviews.jsonl")
    assert len(server.requests) == 3 and again["score"] == first["score"]
    # a changed answer is asked again, the others come from the cache
    rows = read_rows(answers)
    rows[1]["text"] = "The dog is black."
    answers.write_text("".join(json.dumps(r) + "\n" for r in rows))
    third = score_mmhal_files(answers, DATA / "mmhal_template.json", judge, tmp_path / "reviews.jsonl")
    assert len(server.requests) == 4 and [r["rating"] for r in third["reviews"]] == [5, 5, None]


def test_mmhal_refuses_missing_answers(tmp_path):
    answers = tmp_path / "a.jsonl"
    answers.write_text(json.dumps({"question_id": "a1", "text": "x"}) + "\n")
    with pytest.raises(ValueError, match="2 of 3 questions have no answer"):
        fill_template(read_rows(DATA / "mmhal_template.json"), read_rows(answers))


def test_judge_gives_up_after_its_retries_and_reports_client_errors(serve):
    server = serve(lambda body: "never", fail_first=100)
    with pytest.raises(JudgeError, match="after 3 attempts: HTTP 429"):
        _judge(server, max_retries=2).complete([{"role": "user", "content": "hi"}], 0.0, 8)
    assert len(server.requests) == 3

    down = OpenAIChatJudge(JudgeConfig(base_url="http://127.0.0.1:9/v1", max_retries=1, retry_backoff_s=0.0,
                                       timeout_s=2.0))
    with pytest.raises(JudgeError, match="after 2 attempts: Connect"):
        down.complete([{"role": "user", "content": "hi"}], 0.0, 8)


# --- LLaVA-Bench -----------------------------------------------------------------------------


def test_llava_bench_through_an_openai_compatible_server(serve, tmp_path):
    def reply(body: dict[str, Any]) -> str:
        content = body["messages"][1]["content"]
        if "[Question]\nWhat is in the picture?" in content:
            return "8 6\nAssistant 1 is more precise."
        if "Describe the picture" in content:
            return "7, 7\nBoth fine."
        return "I cannot decide."

    server = serve(reply)
    answers = tmp_path / "answers.jsonl"
    answers.write_text("".join(json.dumps({"question_id": i, "text": f"answer {i}"}) + "\n" for i in range(3)))
    result = score_llava_bench_files(DATA / "llava_bench_questions.jsonl", DATA / "llava_bench_context.jsonl",
                                     DATA / "llava_bench_reference.jsonl", answers, _judge(server))
    # conv 6 / 8, detail 7 / 7, complex unparsed (left out); all: mean 6.5 / mean 7.5
    c = result["categories"]
    assert c["conv"]["relative"] == pytest.approx(75.0) and c["detail"]["relative"] == pytest.approx(100.0)
    assert "complex" not in c and result["unparsed"] == 1
    assert result["relative"] == pytest.approx(100 * 6.5 / 7.5)
    body = server.requests[0]["body"]
    assert body["temperature"] == 0.2 and body["messages"][0] == {"role": "system", "content": SYSTEM}
    assert body["messages"][1]["content"] == (
        "[Context]\nA red square on a white background.\n\n[Question]\nWhat is in the picture?\n\n"
        "[Assistant 1]\nA red square.\n\n[End of Assistant 1]\n\n[Assistant 2]\nanswer 0\n\n[End of Assistant 2]\n\n"
        f"[System]\n{rules()['llava_bench_conv']['prompt']}\n\n")
    third = server.requests[2]["body"]["messages"][1]["content"]
    assert third.startswith("[Context]\nA dog sits by a door.\nThe door is closed.\n\n")  # a caption list, joined


# --- local Hugging Face judges ---------------------------------------------------------------


def _bigram_judge(folder: Path, rating: str) -> Path:
    """A 1-layer Llama whose residual stream is the current token's one-hot embedding (attention and MLP outputs
    zeroed), so its greedy continuation follows a bigram table: anything -> "Rating:" -> rating -> </s>."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "</s>": 1, "<pad>": 2, "Rating:": 3, rating: 4}
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]", eos_token="</s>", pad_token="<pad>")
    config = LlamaConfig(vocab_size=5, hidden_size=8, intermediate_size=4, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=2, max_position_embeddings=4096, eos_token_id=1, pad_token_id=2,
                         bos_token_id=None, tie_word_embeddings=False)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        model.model.embed_tokens.weight.zero_()
        model.model.embed_tokens.weight[:, :5] = torch.eye(5)
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        head = torch.zeros(5, 8)
        for current, following in {0: 3, 1: 3, 2: 3, 3: 4, 4: 1}.items():
            head[following, current] = 10.0
        model.lm_head.weight.copy_(head)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _random_judge(folder: Path) -> Path:
    """A tiny random-weight Llama with the tiny LLaVA's tokenizer (no chat template: messages are joined)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from mfpo.models.tiny_llava import build_tiny_llava_tokenizer

    tokenizer = build_tiny_llava_tokenizer()
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                                         max_position_embeddings=4096, eos_token_id=2, bos_token_id=1,
                                         pad_token_id=tokenizer.pad_token_id))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_mmhal_with_a_local_causal_lm_judge(tmp_path):
    judge = HFChatJudge.load(str(_bigram_judge(tmp_path / "judge5", "5")), device="cpu")
    result = score_mmhal_files(_mmhal_answers(tmp_path), DATA / "mmhal_template.json", judge, max_tokens=8)
    assert [r["reply"] for r in result["reviews"]] == ["Rating: 5"] * 3
    assert (result["score"], result["hal_rate"], result["unparsed"]) == (5.0, 0.0, 0)
    low = HFChatJudge.load(str(_bigram_judge(tmp_path / "judge1", "1")), device="cpu")
    result = score_mmhal_files(_mmhal_answers(tmp_path), DATA / "mmhal_template.json", low, max_tokens=8)
    assert (result["score"], result["hal_rate"]) == (1.0, 100.0)


def test_random_weight_judge_runs_the_same_path_and_its_noise_is_scored_as_the_reference_does(tmp_path):
    judge = HFChatJudge.load(str(_random_judge(tmp_path / "judge")), device="cpu")
    ids = judge.prompt_ids([{"role": "user", "content": "Rating: 3"}])
    assert judge.tokenizer.decode(ids[0], skip_special_tokens=True).strip() == "Rating: 3"
    first = score_mmhal_files(_mmhal_answers(tmp_path), DATA / "mmhal_template.json", judge, max_tokens=6)
    again = score_mmhal_files(_mmhal_answers(tmp_path), DATA / "mmhal_template.json", judge, max_tokens=6)
    replies = [r["reply"] for r in first["reviews"]]
    assert replies == [r["reply"] for r in again["reviews"]] and all(replies)  # greedy: deterministic, non-empty
    expected = [parse_mmhal_rating(r)[0] for r in replies]
    assert [r["rating"] for r in first["reviews"]] == expected
    assert first["unparsed"] == sum(e is None for e in expected)
    assert first["score"] == pytest.approx(sum(e or 0 for e in expected) / 3)
