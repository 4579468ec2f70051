"""What the figures draw: text printed, not pictured; titles that name the score."""

import figures
import pytest
import torch
from data import ModalitySpec
from evaluate import label_kind
from model import MultimodalVAE

IMAGE = ModalitySpec("image", "image", (3, 32, 32), "bernoulli")
CAPTION = ModalitySpec("text", "text", (128, 71), "shifted-categorical")
ATTRIBUTES = ModalitySpec("attributes", "attributes", (18,), "bernoulli")


@pytest.mark.parametrize(
    ("specs", "drawn"),
    [([IMAGE, CAPTION], [0]), ([CAPTION, IMAGE, ATTRIBUTES], [1, 2]), ([CAPTION, CAPTION], [0, 1])],
)
def test_every_modality_but_text_is_pictured_unless_all_are_text(specs, drawn):
    assert figures.pictured(specs) == drawn


def test_reconstructions_picture_the_image_and_leave_the_caption_to_the_text_figure(
    monkeypatch, tmp_path
):
    torch.manual_seed(0)
    model = MultimodalVAE([IMAGE, CAPTION], 4, "mwb").eval()
    xs = [torch.rand(3, *IMAGE.shape), torch.eye(71)[torch.randint(0, 71, (3, 128))]]
    drawn = {}
    monkeypatch.setattr(figures, "_save_rows", lambda rows, path, title: drawn.update(rows))
    figures.save_reconstructions(model, xs, tmp_path / "reconstructions.png")
    assert list(drawn) == ["image", "image rec."]
    assert drawn["image"].shape[0] == 32


@pytest.mark.parametrize(
    ("labels", "score"), [((5,), "accuracy"), ((5, 3), "mean average precision")]
)
def test_probe_and_coherence_plots_name_the_score_of_the_labels(labels, score):
    score_name = label_kind(torch.zeros(labels)).score_name
    assert score_name == score
    assert figures.metric_title("linear_probe", score_name) == f"latent linear probe ({score})"
    assert figures.metric_title("coherence", score_name) == f"cross-modal coherence ({score})"
    assert figures.metric_title("log_likelihood", score_name) == "test log-likelihood (nats)"
