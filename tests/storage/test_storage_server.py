"""End to end: a server started with STORAGE_URI fetches from the S3 server, then answers."""

import shutil
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[2]
IRIS = REPO / "examples" / "sklearn-iris" / "model.joblib"


def s3_env(endpoint: str, uri: str) -> dict:
    return {"STORAGE_URI": uri, "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true"}


def test_storage_uri_is_fetched_then_served(launch, s3, s3_endpoint, tmp_path):
    s3.create_bucket(Bucket="served")
    s3.upload_file(str(IRIS), "served", "iris/model.joblib")
    server = launch("-m", "sklearnserver", "--model_name", "iris",
                    "--model_dir", str(tmp_path / "models"),
                    env=s3_env(s3_endpoint, "s3://served/iris"))
    reply = requests.post(server.url + "/v1/models/iris:predict",
                          json={"instances": [[6.8, 2.8, 4.8, 1.4]]})
    assert reply.json() == {"predictions": [1]}
    assert (tmp_path / "models" / "model.joblib").is_file()


def test_a_model_dir_that_is_a_uri_is_fetched_then_served(launch, s3, s3_endpoint,
                                                          mlflow_server):
    """As KServe's own servers take `--model_dir gs://...`: the URI is fetched first."""
    s3.create_bucket(Bucket="direct")
    s3.upload_file(str(IRIS), "direct", "iris/model.joblib")
    env = s3_env(s3_endpoint, "")
    env.pop("STORAGE_URI")
    server = launch("-m", "sklearnserver", "--model_name", "iris", "--model_dir",
                    "s3://direct/iris", env=env)
    reply = requests.post(server.url + "/v1/models/iris:predict",
                          json={"instances": [[6.8, 2.8, 4.8, 1.4]]})
    assert reply.json() == {"predictions": [1]}
    url, made = mlflow_server
    registry = launch("-m", "mlflowserver", "--model_name", "iris", "--model_dir",
                      "models:/iris@champion", env={"MLFLOW_TRACKING_URI": url})
    assert requests.get(registry.url + "/v2/models/iris/ready", timeout=10).status_code == 200


def test_bad_storage_uri_exits_with_a_clear_message(launch, s3_endpoint, tmp_path):
    server = launch("-m", "sklearnserver", "--model_dir", str(tmp_path / "models"),
                    env=s3_env(s3_endpoint, "s3://no-such-bucket/iris"), wait=False)
    assert server.wait_exit() == 1
    output = server.output()
    assert "could not fetch the model: s3://no-such-bucket/iris" in output
    assert "NoSuchBucket" in output and "Traceback" not in output


def test_repository_load_from_s3(launch, s3, s3_endpoint, tmp_path):
    s3.create_bucket(Bucket="repo")
    s3.upload_file(str(IRIS), "repo", "models/flower/model.joblib")
    root = tmp_path / "repo"
    root.mkdir()
    env = s3_env(s3_endpoint, "")
    env.pop("STORAGE_URI")
    server = launch("-m", "sklearnserver", "--model_dir", str(root), "--multi_model",
                    "--allowed_storage_uris", "s3://repo/models/", env=env)
    load = requests.post(server.url + "/v2/repository/models/flower/load",
                         json={"parameters": {"storage_uri": "s3://repo/models/flower"}})
    assert load.status_code == 200, load.text
    reply = requests.post(server.url + "/v1/models/flower:predict",
                          json={"instances": [[6.8, 2.8, 4.8, 1.4]]})
    assert reply.json() == {"predictions": [1]}
    missing = requests.post(server.url + "/v2/repository/models/other/load",
                            json={"parameters": {"storage_uri": "s3://repo/models/none"}})
    assert missing.status_code == 400 and "no objects under" in missing.json()["error"]
    shutil.rmtree(root)


def test_storage_uri_from_the_mlflow_registry(launch, mlflow_server, tmp_path):
    """The MLflow runtime started with STORAGE_URI=models:/iris@champion serves what the
    registry's champion predicts."""
    from sklearn.datasets import load_iris

    url, made = mlflow_server
    server = launch("-m", "mlflowserver", "--model_name", "iris", "--model_dir",
                    str(tmp_path / "models"),
                    env={"STORAGE_URI": "models:/iris@champion", "MLFLOW_TRACKING_URI": url})
    reply = requests.post(server.url + "/v1/models/iris:predict",
                          json={"instances": load_iris().data[::50].tolist()})
    assert reply.json() == {"predictions": made["v1"]["predictions"]}


def test_repository_load_from_the_hub(launch, hub, hub_server, tmp_path):
    hub("org/flower", {"model.joblib": IRIS.read_bytes()})
    root = tmp_path / "repo"
    root.mkdir()
    server = launch("-m", "sklearnserver", "--model_dir", str(root), "--multi_model",
                    "--allowed_storage_uris", "hf://org/", env={"HF_ENDPOINT": hub_server[0]})
    load = requests.post(server.url + "/v2/repository/models/flower/load",
                         json={"parameters": {"storage_uri": "hf://org/flower"}})
    assert load.status_code == 200, load.text
    reply = requests.post(server.url + "/v1/models/flower:predict",
                          json={"instances": [[6.8, 2.8, 4.8, 1.4]]})
    assert reply.json() == {"predictions": [1]}
