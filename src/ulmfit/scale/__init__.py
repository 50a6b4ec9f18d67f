"""Scale-out on existing engines: bulk prediction over processes (`bulk.py`, `ulmfit predict --workers`)
and on Ray Data / Spark (`ray_predict.py`). Data-parallel training lives in `train/distributed.py`."""
