"""Picture helpers: the film strip of a sampling trajectory."""

import numpy as np

from minimodal.viz import film_strip


def test_film_strip_keeps_first_and_last_step_one_row_per_image():
    S, N = 23, 2
    trajectory = np.zeros((S, N, 4, 4, 3), np.uint8)
    trajectory[..., 0] = np.arange(S)[:, None, None, None]  # red channel = step index
    trajectory[..., 1] = np.arange(N)[None, :, None, None]  # green channel = image index
    strip = film_strip(trajectory, frames=5)
    assert strip.shape == (N * 5, 4, 4, 3) and strip.dtype == np.uint8
    steps = strip[:, 0, 0, 0].reshape(N, 5)
    np.testing.assert_array_equal(steps, [[0, 6, 11, 16, 22]] * N)  # round(linspace(0, 22, 5))
    np.testing.assert_array_equal(strip[:, 0, 0, 1].reshape(N, 5), [[0] * 5, [1] * 5])
