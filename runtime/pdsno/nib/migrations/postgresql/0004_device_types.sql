-- Schema 4: device types firewall, access_point and wireless_controller.
ALTER TABLE devices DROP CONSTRAINT devices_device_type_check;
ALTER TABLE devices ADD CONSTRAINT devices_device_type_check
    CHECK (device_type IN ('router','switch','firewall','access_point','wireless_controller','server','endpoint',
                           'unknown'));
