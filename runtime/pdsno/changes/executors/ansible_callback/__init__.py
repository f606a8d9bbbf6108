"""The stdout callback ``pdsno_json`` the ansible executor points ``ANSIBLE_CALLBACK_PLUGINS`` at.

ansible-core bundles no JSON stdout callback (``json`` lives in ansible.posix), and parsing the default
callback's text would break with every release, so this directory ships one; Ansible loads it by path.
"""
