import sys

from milvus_rbac_operator.cli import main

sys.exit(main())
