"""Dump the Tempest compute response schemas the compute tests validate against.

Run from a checkout of Tempest 33.0.0 (the version the hidden Tempest run uses):

    git -C tempest archive 33.0.0 tempest/lib/api_schema/response/compute | tar -x -C /tmp/ts
    touch /tmp/ts/tempest/__init__.py /tmp/ts/tempest/lib/__init__.py \
          /tmp/ts/tempest/lib/api_schema/__init__.py /tmp/ts/tempest/lib/api_schema/response/__init__.py
    PYTHONPATH=/tmp/ts python3 gen_tempest_schemas.py > tempest_schemas.json

Tempest 33.0.0 stops at microversion 2.79. The dirs above it (MASTER_MODULES) come from
a checkout of Tempest master (fa340b1f5, extracted the same way to /tmp/tsm), given as
the first argument; they are dumped by a second interpreter with that tree on its path:

    PYTHONPATH=/tmp/ts python3 gen_tempest_schemas.py /tmp/tsm > tempest_schemas.json

Only stdlib is needed: the schema modules import nothing but each other.
Each entry is "<microversion dir>.<module>.<name>" -> {"status_code": [...], "response_body": {...}},
kept only where it changed since the previous microversion dir.
LIST_INSTANCE_ACTIONS_V258 is Tempest master's 2.58 list schema (33.0.0 validates
the list against 2.1 at every microversion, master adds updated_at/links from 2.58
as Nova returns them).
"""
import copy
import importlib
import json
import os
import subprocess
import sys

MODULES = {
    'servers': ['v2_1', 'v2_3', 'v2_6', 'v2_8', 'v2_9', 'v2_16', 'v2_19', 'v2_26',
                'v2_45', 'v2_47', 'v2_48', 'v2_51', 'v2_54', 'v2_57', 'v2_58', 'v2_62', 'v2_63',
                'v2_70', 'v2_71', 'v2_73', 'v2_75', 'v2_79'],
    'flavors': ['v2_1', 'v2_55', 'v2_61'],
    'flavors_access': ['v2_1'],
    'flavors_extra_specs': ['v2_1'],
    'limits': ['v2_1', 'v2_36', 'v2_39', 'v2_57'],
    'availability_zone': ['v2_1'],
    'services': ['v2_1', 'v2_11', 'v2_53'],
    'hypervisors': ['v2_1', 'v2_28', 'v2_33', 'v2_53'],
    'versions': ['v2_1'],
    'keypairs': ['v2_1', 'v2_2'],
    'tenant_usages': ['v2_1'],
    'quotas': ['v2_1', 'v2_36', 'v2_57'],
    'server_groups': ['v2_1', 'v2_13', 'v2_64'],
    'migrations': ['v2_1', 'v2_23', 'v2_59'],
    'interfaces': ['v2_1', 'v2_70'],
    'extensions': ['v2_1'],
    'images': ['v2_1', 'v2_45'],
    'security_groups': ['v2_1'],
    'aggregates': ['v2_1', 'v2_41'],
}

# Dirs above 2.79, from Tempest master.
MASTER_MODULES = {
    'servers': ['v2_80', 'v2_84', 'v2_89', 'v2_96'],
    'migrations': ['v2_80'],
}

# Server schemas for calls Capsule serves; the other modules are taken whole.
SERVER_CALLS = {
    'create_server', 'create_server_with_admin_pass', 'list_servers', 'list_servers_detail', 'get_server',
    'update_server', 'delete_server', 'list_instance_actions', 'show_instance_action', 'list_addresses',
    'list_addresses_by_network', 'get_console_output', 'set_server_metadata', 'list_server_metadata',
    'update_server_metadata', 'set_show_server_metadata_item', 'delete_server_metadata_item',
    'list_volume_attachments', 'server_actions_common_schema', 'show_server_diagnostics',
    'rebuild_server', 'rebuild_server_with_admin_pass',
    'list_tags', 'update_all_tags', 'delete_all_tags', 'check_tag_existence', 'update_tag', 'delete_tag',
}


def wanted(mod, name):
    return mod != 'servers' or name in SERVER_CALLS


def dump(modules):
    got = {}
    for mod, versions in modules.items():
        for v in versions:
            m = importlib.import_module('tempest.lib.api_schema.response.compute.%s.%s' % (v, mod))
            for name, val in vars(m).items():
                if isinstance(val, dict) and 'status_code' in val and wanted(mod, name):
                    got['%s.%s.%s' % (v, mod, name)] = val
    return got


if os.environ.get('GEN_MASTER_ONLY'):
    print(json.dumps(dump(MASTER_MODULES)))
    sys.exit(0)

out = dump(MODULES)
if len(sys.argv) > 1:
    env = dict(os.environ, PYTHONPATH=sys.argv[1], GEN_MASTER_ONLY='1')
    out.update(json.loads(subprocess.check_output([sys.executable, __file__], env=env)))

from tempest.lib.api_schema.response.compute.v2_1 import parameter_types  # noqa: E402
from tempest.lib.api_schema.response.compute.v2_1 import servers as s21  # noqa: E402
la = copy.deepcopy(s21.list_instance_actions)
items = la['response_body']['properties']['instanceActions']['items']
items['properties']['updated_at'] = parameter_types.date_time
items['required'].append('updated_at')
la['response_body']['properties']['links'] = parameter_types.links
out['v2_58.servers.list_instance_actions'] = la

# Tempest has no 2.88 hypervisor schemas (its tests never ask for 2.88 there): Nova's
# 2.88 detail/show drop the resource figures and add uptime, so the 2.53 schema is
# derived accordingly.
from tempest.lib.api_schema.response.compute.v2_53 import hypervisors as h253  # noqa: E402
GONE_88 = ['current_workload', 'cpu_info', 'vcpus', 'vcpus_used', 'free_disk_gb', 'local_gb', 'local_gb_used',
           'disk_available_least', 'free_ram_mb', 'memory_mb', 'memory_mb_used', 'running_vms']


def strip_88(item):
    for k in GONE_88:
        item['properties'].pop(k, None)
        if k in item['required']:
            item['required'].remove(k)
    item['properties']['uptime'] = {'type': ['string', 'null']}
    item['required'].append('uptime')


ld = copy.deepcopy(h253.list_hypervisors_detail)
strip_88(ld['response_body']['properties']['hypervisors']['items'])
out['v2_88.hypervisors.list_hypervisors_detail'] = ld
gh = copy.deepcopy(h253.get_hypervisor)
strip_88(gh['response_body']['properties']['hypervisor'])
out['v2_88.hypervisors.get_hypervisor'] = gh

# Keep a microversion's entry only where it differs from the one before it:
# the tests pick the highest entry at or below the requested microversion.
def vkey(k):
    return tuple(int(x) for x in k.split('.')[0][1:].split('_'))


last = {}
for key in sorted(out, key=vkey):
    short = key.split('.', 1)[1]
    if last.get(short) == out[key]:
        del out[key]
    else:
        last[short] = out[key]

print(json.dumps(out, sort_keys=True, separators=(',', ':')))
