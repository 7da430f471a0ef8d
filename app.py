"""cnn-ablation dashboard: `streamlit run app.py` (or `make run`, which serves it through
cnn_ablation/ui/server.py: the same pages, with Streamlit's metrics endpoint closed and uploads
refused before the password). The script body is cnn_ablation/ui/main.py."""

from cnn_ablation.ui.main import main

main()
