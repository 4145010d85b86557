"""The language model: the ONNX graph equals a numpy pass of the same weights, and it understands paraphrase."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from workers.language import model

# (anchor, paraphrase, unrelated): the paraphrase must be the closer of the two.
TRIPLES = [
    ("The cat sits on the mat.", "A cat is sitting on a rug.", "Interest rates rose again this quarter."),
    ("How do I reset my password?", "I forgot my password, how can I change it?", "The train to Berlin is late."),
    ("The server is down.", "Our backend is offline.", "She painted the fence blue."),
    ("I was charged twice this month.", "My card was billed two times for one payment.", "Dogs love long walks."),
    ("The printer is jammed.", "Paper is stuck in the printer.", "The election results are in."),
    ("Please add a dark mode.", "Could the app get a dark theme?", "The soup needs more salt."),
    ("It is raining heavily outside.", "There is a downpour right now.", "My laptop battery is new."),
    ("He bought a new car.", "He purchased a new vehicle.", "The museum opens at nine."),
    ("The meeting was moved to Friday.", "We rescheduled the meeting for Friday.", "Penguins cannot fly."),
    ("The children are playing football.", "Kids are kicking a ball around.", "The stock market crashed."),
    ("Turn off the lights when you leave.", "Switch the lights off on your way out.", "Bananas are rich in potassium."),
    ("The flight was cancelled.", "Our plane will not depart today.", "He plays the violin beautifully."),
    ("This restaurant serves great pasta.", "The pasta at this place is excellent.", "The bridge needs repairs."),
    ("My phone screen is cracked.", "The display of my phone is broken.", "The river flooded the village."),
    ("She is learning to speak Spanish.", "She studies the Spanish language.", "The oven is preheating."),
    ("The package arrived damaged.", "The parcel was broken on delivery.", "Mountains are covered in snow."),
    ("Can you send me the report?", "Please email me the report.", "The cat chased a mouse."),
    ("The temperature dropped overnight.", "It got much colder during the night.", "I enjoy reading novels."),
    ("The app crashes on startup.", "The application fails as soon as it opens.", "We planted tomatoes."),
    ("He is a talented musician.", "He plays music very well.", "The invoice is overdue."),
    ("The road is closed for construction.", "Roadworks have shut the street.", "My sister adopted a puppy."),
    ("I need to cancel my subscription.", "How do I stop my membership?", "The sun sets in the west."),
    ("The baby is sleeping.", "The infant is asleep.", "The company hired ten engineers."),
    ("The coffee is too hot to drink.", "This coffee is scalding.", "The library closes early today."),
]


@pytest.fixture(scope="module")
def session(models: dict[str, Path]) -> ort.InferenceSession:
    return ort.InferenceSession(str(models["language"]), providers=["CPUExecutionProvider"])


def embed(session: ort.InferenceSession, texts: list[str], max_tokens: int = 128) -> np.ndarray:
    ids, mask, _ = model.tokenize(texts, max_tokens)
    (emb,) = session.run(["embedding"], {"input_ids": ids, "attention_mask": mask})
    return np.asarray(emb)


def test_the_graph_matches_an_independent_numpy_pass_to_1e4(session: ort.InferenceSession) -> None:
    # sentences of different lengths, so padding and the attention mask matter
    texts = [t for triple in TRIPLES[:4] for t in triple] + ["ok", "a much longer sentence " * 6]
    ids, mask, _ = model.tokenize(texts, 128)
    assert (mask == 0).any()
    (onnx_emb,) = session.run(["embedding"], {"input_ids": ids, "attention_mask": mask})
    numpy_emb = model.numpy_forward(model.load_weights(), ids, mask)
    assert np.abs(onnx_emb - numpy_emb).max() < 1e-4
    np.testing.assert_allclose(np.linalg.norm(onnx_emb, axis=1), 1.0, rtol=1e-5)


def test_padding_does_not_change_a_sentences_embedding(session: ort.InferenceSession) -> None:
    alone = embed(session, ["The server is down."])[0]
    padded = embed(session, ["The server is down.", "a far longer sentence that forces padding " * 3])[0]
    assert np.abs(alone - padded).max() < 1e-5


def test_a_paraphrase_is_closer_than_an_unrelated_sentence_in_95_percent_of_pairs(
    session: ort.InferenceSession,
) -> None:
    emb = embed(session, [t for triple in TRIPLES for t in triple]).reshape(len(TRIPLES), 3, -1)
    para = (emb[:, 0] * emb[:, 1]).sum(axis=1)
    unrelated = (emb[:, 0] * emb[:, 2]).sum(axis=1)
    assert (para > unrelated).mean() >= 0.95


def test_long_texts_are_truncated_and_flagged() -> None:
    ids, mask, truncated = model.tokenize(["word " * 500, "short"], 32)
    assert ids.shape == (2, 32) and truncated == [True, False]
    assert mask[1].sum() < 32
