"""Train an iris classifier and record it with Nimbus.

Submitted with `nimbus run submit train.py --experiment iris` it logs to its run; run by hand
(`python train.py`) it logs to an offline run that prints what it would record.
"""
import argparse
import os
import pickle
import warnings

import matplotlib

matplotlib.use("Agg")  # no display where runs execute
import matplotlib.pyplot as plt  # noqa: E402
from sklearn.datasets import load_iris  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import ConfusionMatrixDisplay, accuracy_score  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

from nimbus import Run  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=10, help="training passes, each logged")
    parser.add_argument("--C", type=float, default=1.0, help="inverse regularisation strength")
    args = parser.parse_args()

    run = Run.get_context()
    run.log("C", args.C)
    features, labels = load_iris(return_X_y=True)
    train_x, test_x, train_y, test_y = train_test_split(features, labels, test_size=0.3, random_state=0,
                                                        stratify=labels)
    warnings.filterwarnings("ignore", category=ConvergenceWarning)  # early epochs stop short on purpose
    model = None
    for epoch in range(1, args.epochs + 1):
        # More iterations each epoch: the accuracy curve shows the solver converging.
        model = LogisticRegression(C=args.C, max_iter=epoch * 5)
        model.fit(train_x, train_y)
        accuracy = accuracy_score(test_y, model.predict(test_x))
        run.log("accuracy", accuracy, step=epoch)
        print(f"epoch {epoch}: accuracy {accuracy:.3f}")

    figure, axes = plt.subplots(figsize=(4, 4))
    ConfusionMatrixDisplay.from_estimator(model, test_x, test_y, ax=axes)
    run.log_image("confusion_matrix", plot=figure)
    os.makedirs("outputs", exist_ok=True)
    with open("outputs/model.pkl", "wb") as handle:
        pickle.dump(model, handle)
    run.log("final_accuracy", accuracy)
    print("model written to outputs/model.pkl")


if __name__ == "__main__":
    main()
