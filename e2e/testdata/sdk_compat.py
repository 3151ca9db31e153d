"""openstacksdk (Debian's python3-openstacksdk) over issue 18's Compute, Image and Network items.

Run by e2e TestOpenstackSDKCompat against a cloud of its own, as admin (OS_* in the
environment); DEMO_PROJECT_ID is the demo project (image members), VLAN a free VLAN of
physnet1. Prints one JSON line of ids for the test's `openstack --debug` checks; any
failed check raises (exit status 1).
"""
import json
import os

import openstack
from openstack import exceptions


def check(cond, what):
    if not cond:
        raise AssertionError(what)


conn = openstack.connect()
compute = conn.compute
net = conn.network

# Extensions: Nova's list has what Capsule implements, Neutron's the new ones.
aliases = {e.alias for e in compute.extensions()}
check({'os-aggregates', 'os-availability-zone', 'os-keypairs'} <= aliases, 'compute extensions %s' % sorted(aliases))
naliases = {e.alias for e in net.extensions()}
check({'standard-attr-tag', 'net-mtu-writable', 'allowed-address-pairs', 'revision-if-match'} <= naliases,
      'network extensions %s' % sorted(naliases))
check('external-net' not in naliases and 'router' not in naliases, 'unimplemented network extensions listed')

# Host aggregates: the aggregate's zone becomes its host's zone (before any server runs there).
host = next(iter(compute.services(binary='nova-compute'))).host
agg = compute.create_aggregate(name='sdk-agg', availability_zone='sdk-az')
agg = compute.add_host_to_aggregate(agg, host)
check(agg.hosts == [host], 'aggregate hosts %s' % agg.hosts)
agg = compute.set_aggregate_metadata(agg, {'ssd': 'true'})
check(agg.metadata.get('ssd') == 'true' and agg.metadata.get('availability_zone') == 'sdk-az', 'metadata %s' % agg.metadata)
zones = {z.name for z in compute.availability_zones()}
check('sdk-az' in zones, 'zones with the aggregate %s' % zones)
compute.remove_host_from_aggregate(agg, host)
compute.delete_aggregate(agg)
check('sdk-az' not in {z.name for z in compute.availability_zones()}, 'zone left after the aggregate went')

# Network, tags and the mtu filter.
vlan = int(os.environ['VLAN'])
n = net.create_network(name='sdk-net', provider_network_type='vlan', provider_physical_network='physnet1',
                       provider_segmentation_id=vlan, mtu=1400)
sub = net.create_subnet(network_id=n.id, ip_version=4, cidr='10.79.0.0/24', name='sdk-sub')
net.set_tags(n, ['blue', 'sdk'])
check(sorted(net.get_network(n.id).tags) == ['blue', 'sdk'], 'network tags')
check([x.id for x in net.networks(tags='blue,sdk')] == [n.id], 'tags filter')
check(n.id not in [x.id for x in net.networks(not_any_tags='blue')], 'not-tags-any filter')
by_mtu = {m: [x['id'] for x in net.get('/networks?mtu=%d' % m).json()['networks']] for m in (1400, 1401)}
check(n.id in by_mtu[1400] and n.id not in by_mtu[1401], 'mtu filter %s' % by_mtu)

# Port allowed_address_pairs with If-Match (revision_number).
p = net.create_port(network_id=n.id, name='sdk-port')
p = net.update_port(p, if_revision=p.revision_number, allowed_address_pairs=[{'ip_address': '10.79.0.200'}])
check(p.allowed_address_pairs and p.allowed_address_pairs[0]['ip_address'] == '10.79.0.200', 'pairs %s' % p.allowed_address_pairs)
try:
    net.update_port(p, if_revision=p.revision_number - 1, name='stale')
    raise AssertionError('a stale If-Match was accepted')
except exceptions.HttpException as e:
    check(e.status_code == 412, 'stale If-Match: %s' % e.status_code)
net.delete_port(p)

# Images: custom properties, import (glance-direct), members.
img = conn.image.create_image('sdk-img', data=b'not a docker image', disk_format='raw', container_format='bare',
                              use_import=True, os_distro='capsule', wait=True)
img = conn.image.get_image(img.id)
check(img.status == 'active' and img.os_distro == 'capsule', 'imported image %s %s %s' % (img.status, img.os_distro, img.properties))
found = conn.image.get('/images?os_distro=capsule').json()['images']
check([i['id'] for i in found] == [img.id], 'property filter %s' % found)
conn.image.update_image(img, visibility='shared')
member = conn.image.add_member(img, member_id=os.environ['DEMO_PROJECT_ID'])
check(member.status == 'pending', 'member %s' % member.status)
check([m.member_id for m in conn.image.members(img)] == [os.environ['DEMO_PROJECT_ID']], 'members')

# Compute at 2.96: create and show a server pinned to no zone, find it by its address.
busybox = conn.image.find_image('busybox', ignore_missing=False)
flavor = compute.find_flavor('m1.tiny', ignore_missing=False)
srv = compute.create_server(name='sdk-vm', image_id=busybox.id, flavor_id=flavor.id, networks=[{'uuid': n.id}])
srv = compute.wait_for_server(srv, wait=300)
shown = compute.get('/servers/' + srv.id, microversion='2.96').json()['server']
check('pinned_availability_zone' in shown, '2.96 server %s' % sorted(shown))
ip = shown['addresses']['sdk-net'][0]['addr']
check([s.id for s in compute.servers(ipv4_address=ip.replace('.', '\\.') + '$')] == [srv.id], 'ip filter for %s' % ip)

# The Compute image proxy (below 2.36): Glance's images in Nova's words.
old = compute.get('/images/' + busybox.id, microversion='2.35').json()['image']
check(old['status'] == 'ACTIVE' and old['id'] == busybox.id, 'image proxy %s' % old)
check(busybox.id in [i.id for i in compute.images()], 'image proxy list')

print(json.dumps({'network': n.id, 'port_subnet': sub.id, 'server': srv.id, 'image': img.id, 'host': host}))
