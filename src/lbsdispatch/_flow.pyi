# Type stub of the optimal-mode solver (see _flow.pyx).
from typing import Tuple

import numpy as np

def min_cost_bmatching(indptr: np.ndarray, col: np.ndarray, cost: np.ndarray,
                       cap: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]: ...
def max_bmatching(indptr: np.ndarray, col: np.ndarray, w: np.ndarray, wmax: int,
                  cap: np.ndarray) -> Tuple[int, np.ndarray]: ...
def sort_rows(indptr: np.ndarray, key: np.ndarray) -> np.ndarray: ...
