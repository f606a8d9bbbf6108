# Copyright: PDSNO maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)


class ModuleDocFragment:
    # How the modules reach the Global controller's northbound API.
    DOCUMENTATION = r"""
options:
  url:
    description:
      - Base URL of the Global controller's REST API, for example C(https://gc.example.net:8443).
      - The API lives under C(/api/v1) below it; a URL that already ends in C(/api/v1) is accepted.
      - If not set, the environment variable E(PDSNO_URL) is used.
    type: str
    required: true
  token:
    description:
      - Operator bearer token, as printed once by C(pdsno operator add).
      - The operator's role must allow the request (viewer < operator < approver < admin).
      - If not set, the environment variable E(PDSNO_TOKEN) is used.
    type: str
    required: true
  ca_path:
    description:
      - PEM file of the CA that signed the GC's certificate (the deployment CA).
      - If not set, the environment variable E(PDSNO_CA_PATH) is used (the one the C(pdsno) CLI reads
        too), then the system trust store.
    type: path
  validate_certs:
    description:
      - Verify the GC's TLS certificate. Only turn this off against a throwaway development GC.
    type: bool
    default: true
  timeout:
    description:
      - Seconds to wait for each HTTP request to the GC.
    type: int
    default: 30
notes:
  - The modules talk to the GC over HTTPS only; they need nothing of the C(pdsno) runtime on the
    host they run on (usually C(localhost)).
  - Errors from the GC fail the task with the GC's message, its reason code in C(code) and the HTTP
    status in C(http_status). A GC that cannot be reached gives C(code=UNREACHABLE); one whose
    certificate is not trusted (wrong or missing O(ca_path)) gives C(code=TLS_ERROR).
"""

    # The same options for the inventory plugin, where they also come from the environment.
    PLUGIN = r"""
options:
  url:
    description:
      - Base URL of the Global controller's REST API, for example C(https://gc.example.net:8443).
      - A URL that already ends in C(/api/v1) is accepted.
    type: str
    required: true
    env:
      - name: PDSNO_URL
  token:
    description:
      - Operator bearer token (role viewer or higher), as printed once by C(pdsno operator add).
      - Prefer the environment variable or an Ansible Vault encrypted value over clear text in the file.
    type: str
    required: true
    env:
      - name: PDSNO_TOKEN
  ca_path:
    description:
      - PEM file of the CA that signed the GC's certificate (the deployment CA).
    type: path
    env:
      - name: PDSNO_CA_PATH
  validate_certs:
    description:
      - Verify the GC's TLS certificate.
    type: bool
    default: true
  timeout:
    description:
      - Seconds to wait for each HTTP request to the GC.
    type: int
    default: 30
"""
