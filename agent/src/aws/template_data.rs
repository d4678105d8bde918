//! Launch template data as `DescribeLaunchTemplateVersions` returns it,
//! converted to the form `CreateLaunchTemplateVersion` takes.
//!
//! The two forms are different SDK types with the same meaning. A new
//! version is always created with `SourceVersion` (on AWS every field not sent
//! is inherited from it) *and* with every field converted here (emulators
//! such as moto ignore `SourceVersion`). Fields this module does not convert
//! are reported by name so the caller can log them: on AWS they are still
//! inherited; they are never silently changed.

use aws_sdk_ec2::types as t;

/// The request form of `data`, and the names of the fields that were set in
/// `data` but not converted (inherited through `SourceVersion` only).
pub(crate) fn to_request(
    data: &t::ResponseLaunchTemplateData,
) -> (t::RequestLaunchTemplateData, Vec<&'static str>) {
    let mut skipped = Vec::new();
    if !data.elastic_gpu_specifications().is_empty() {
        skipped.push("ElasticGpuSpecifications");
    }
    if !data.elastic_inference_accelerators().is_empty() {
        skipped.push("ElasticInferenceAccelerators");
    }
    if data.instance_requirements().is_some() {
        skipped.push("InstanceRequirements");
    }
    if data.network_performance_options().is_some() {
        skipped.push("NetworkPerformanceOptions");
    }
    if data.operator().is_some() {
        skipped.push("Operator");
    }
    let request = t::RequestLaunchTemplateData::builder()
        .set_kernel_id(data.kernel_id.clone())
        .set_ebs_optimized(data.ebs_optimized)
        .set_iam_instance_profile(data.iam_instance_profile().map(|p| {
            t::LaunchTemplateIamInstanceProfileSpecificationRequest::builder()
                .set_arn(p.arn.clone())
                .set_name(p.name.clone())
                .build()
        }))
        .set_block_device_mappings(list(data.block_device_mappings(), block_device))
        .set_network_interfaces(list(data.network_interfaces(), |n| {
            network_interface(n, &mut skipped)
        }))
        .set_image_id(data.image_id.clone())
        .set_instance_type(data.instance_type.clone())
        .set_key_name(data.key_name.clone())
        .set_monitoring(data.monitoring().map(|m| {
            t::LaunchTemplatesMonitoringRequest::builder()
                .set_enabled(m.enabled)
                .build()
        }))
        .set_placement(data.placement().map(placement))
        .set_ram_disk_id(data.ram_disk_id.clone())
        .set_disable_api_termination(data.disable_api_termination)
        .set_instance_initiated_shutdown_behavior(data.instance_initiated_shutdown_behavior.clone())
        .set_user_data(data.user_data.clone())
        .set_tag_specifications(list(data.tag_specifications(), |s| {
            t::LaunchTemplateTagSpecificationRequest::builder()
                .set_resource_type(s.resource_type.clone())
                .set_tags(s.tags.clone())
                .build()
        }))
        .set_security_group_ids(data.security_group_ids.clone())
        .set_security_groups(data.security_groups.clone())
        .set_instance_market_options(data.instance_market_options().map(market_options))
        .set_credit_specification(data.credit_specification().map(|c| {
            t::CreditSpecificationRequest::builder()
                .set_cpu_credits(c.cpu_credits.clone())
                .build()
        }))
        .set_cpu_options(data.cpu_options().map(|c| {
            t::LaunchTemplateCpuOptionsRequest::builder()
                .set_core_count(c.core_count)
                .set_threads_per_core(c.threads_per_core)
                .set_amd_sev_snp(c.amd_sev_snp.clone())
                .build()
        }))
        .set_capacity_reservation_specification(data.capacity_reservation_specification().map(
            |c| {
                t::LaunchTemplateCapacityReservationSpecificationRequest::builder()
                    .set_capacity_reservation_preference(c.capacity_reservation_preference.clone())
                    .set_capacity_reservation_target(c.capacity_reservation_target().map(
                        |target| {
                            t::CapacityReservationTarget::builder()
                                .set_capacity_reservation_id(target.capacity_reservation_id.clone())
                                .set_capacity_reservation_resource_group_arn(
                                    target.capacity_reservation_resource_group_arn.clone(),
                                )
                                .build()
                        },
                    ))
                    .build()
            },
        ))
        .set_license_specifications(list(data.license_specifications(), |l| {
            t::LaunchTemplateLicenseConfigurationRequest::builder()
                .set_license_configuration_arn(l.license_configuration_arn.clone())
                .build()
        }))
        .set_hibernation_options(data.hibernation_options().map(|h| {
            t::LaunchTemplateHibernationOptionsRequest::builder()
                .set_configured(h.configured)
                .build()
        }))
        .set_metadata_options(data.metadata_options().map(|m| {
            t::LaunchTemplateInstanceMetadataOptionsRequest::builder()
                .set_http_tokens(m.http_tokens.clone())
                .set_http_put_response_hop_limit(m.http_put_response_hop_limit)
                .set_http_endpoint(m.http_endpoint.clone())
                .set_http_protocol_ipv6(m.http_protocol_ipv6.clone())
                .set_instance_metadata_tags(m.instance_metadata_tags.clone())
                .build()
        }))
        .set_enclave_options(data.enclave_options().map(|e| {
            t::LaunchTemplateEnclaveOptionsRequest::builder()
                .set_enabled(e.enabled)
                .build()
        }))
        .set_private_dns_name_options(data.private_dns_name_options().map(|p| {
            t::LaunchTemplatePrivateDnsNameOptionsRequest::builder()
                .set_hostname_type(p.hostname_type.clone())
                .set_enable_resource_name_dns_a_record(p.enable_resource_name_dns_a_record)
                .set_enable_resource_name_dns_aaaa_record(p.enable_resource_name_dns_aaaa_record)
                .build()
        }))
        .set_maintenance_options(data.maintenance_options().map(|m| {
            t::LaunchTemplateInstanceMaintenanceOptionsRequest::builder()
                .set_auto_recovery(m.auto_recovery.clone())
                .build()
        }))
        .set_disable_api_stop(data.disable_api_stop)
        .build();
    (request, skipped)
}

/// `None` for an empty list, so "not set" stays "not set".
fn list<A, B>(items: &[A], mut convert: impl FnMut(&A) -> B) -> Option<Vec<B>> {
    (!items.is_empty()).then(|| items.iter().map(&mut convert).collect())
}

fn block_device(
    m: &t::LaunchTemplateBlockDeviceMapping,
) -> t::LaunchTemplateBlockDeviceMappingRequest {
    t::LaunchTemplateBlockDeviceMappingRequest::builder()
        .set_device_name(m.device_name.clone())
        .set_virtual_name(m.virtual_name.clone())
        .set_no_device(m.no_device.clone())
        .set_ebs(m.ebs().map(|e| {
            t::LaunchTemplateEbsBlockDeviceRequest::builder()
                .set_encrypted(e.encrypted)
                .set_delete_on_termination(e.delete_on_termination)
                .set_iops(e.iops)
                .set_kms_key_id(e.kms_key_id.clone())
                .set_snapshot_id(e.snapshot_id.clone())
                .set_volume_size(e.volume_size)
                .set_volume_type(e.volume_type.clone())
                .set_throughput(e.throughput)
                .set_volume_initialization_rate(e.volume_initialization_rate)
                .build()
        }))
        .build()
}

fn network_interface(
    n: &t::LaunchTemplateInstanceNetworkInterfaceSpecification,
    skipped: &mut Vec<&'static str>,
) -> t::LaunchTemplateInstanceNetworkInterfaceSpecificationRequest {
    if n.ena_srd_specification().is_some() {
        skipped.push("NetworkInterfaces.EnaSrdSpecification");
    }
    if n.connection_tracking_specification().is_some() {
        skipped.push("NetworkInterfaces.ConnectionTrackingSpecification");
    }
    t::LaunchTemplateInstanceNetworkInterfaceSpecificationRequest::builder()
        .set_associate_carrier_ip_address(n.associate_carrier_ip_address)
        .set_associate_public_ip_address(n.associate_public_ip_address)
        .set_delete_on_termination(n.delete_on_termination)
        .set_description(n.description.clone())
        .set_device_index(n.device_index)
        .set_groups(n.groups.clone())
        .set_interface_type(n.interface_type.clone())
        .set_ipv6_address_count(n.ipv6_address_count)
        .set_ipv6_addresses(list(n.ipv6_addresses(), |a| {
            t::InstanceIpv6AddressRequest::builder()
                .set_ipv6_address(a.ipv6_address.clone())
                .build()
        }))
        .set_network_interface_id(n.network_interface_id.clone())
        .set_private_ip_address(n.private_ip_address.clone())
        .set_private_ip_addresses(n.private_ip_addresses.clone())
        .set_secondary_private_ip_address_count(n.secondary_private_ip_address_count)
        .set_subnet_id(n.subnet_id.clone())
        .set_network_card_index(n.network_card_index)
        .set_ipv4_prefixes(list(n.ipv4_prefixes(), |p| {
            t::Ipv4PrefixSpecificationRequest::builder()
                .set_ipv4_prefix(p.ipv4_prefix.clone())
                .build()
        }))
        .set_ipv4_prefix_count(n.ipv4_prefix_count)
        .set_ipv6_prefixes(list(n.ipv6_prefixes(), |p| {
            t::Ipv6PrefixSpecificationRequest::builder()
                .set_ipv6_prefix(p.ipv6_prefix.clone())
                .build()
        }))
        .set_ipv6_prefix_count(n.ipv6_prefix_count)
        .set_primary_ipv6(n.primary_ipv6)
        .set_ena_queue_count(n.ena_queue_count)
        .build()
}

fn placement(p: &t::LaunchTemplatePlacement) -> t::LaunchTemplatePlacementRequest {
    t::LaunchTemplatePlacementRequest::builder()
        .set_availability_zone(p.availability_zone.clone())
        .set_affinity(p.affinity.clone())
        .set_group_name(p.group_name.clone())
        .set_host_id(p.host_id.clone())
        .set_tenancy(p.tenancy.clone())
        .set_spread_domain(p.spread_domain.clone())
        .set_host_resource_group_arn(p.host_resource_group_arn.clone())
        .set_partition_number(p.partition_number)
        .set_group_id(p.group_id.clone())
        .build()
}

fn market_options(
    m: &t::LaunchTemplateInstanceMarketOptions,
) -> t::LaunchTemplateInstanceMarketOptionsRequest {
    t::LaunchTemplateInstanceMarketOptionsRequest::builder()
        .set_market_type(m.market_type.clone())
        .set_spot_options(m.spot_options().map(|s| {
            t::LaunchTemplateSpotMarketOptionsRequest::builder()
                .set_max_price(s.max_price.clone())
                .set_spot_instance_type(s.spot_instance_type.clone())
                .set_block_duration_minutes(s.block_duration_minutes)
                .set_valid_until(s.valid_until)
                .set_instance_interruption_behavior(s.instance_interruption_behavior.clone())
                .build()
        }))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_the_fields_a_web_template_uses_and_names_the_rest() {
        let response = t::ResponseLaunchTemplateData::builder()
            .image_id("ami-1")
            .instance_type(t::InstanceType::T3Micro)
            .key_name("ops")
            .user_data("IyEvYmluL3NoCg==")
            .security_group_ids("sg-1")
            .iam_instance_profile(
                t::LaunchTemplateIamInstanceProfileSpecification::builder()
                    .name("web")
                    .build(),
            )
            .block_device_mappings(
                t::LaunchTemplateBlockDeviceMapping::builder()
                    .device_name("/dev/xvda")
                    .ebs(
                        t::LaunchTemplateEbsBlockDevice::builder()
                            .volume_size(20)
                            .encrypted(true)
                            .build(),
                    )
                    .build(),
            )
            .metadata_options(
                t::LaunchTemplateInstanceMetadataOptions::builder()
                    .http_tokens(t::LaunchTemplateHttpTokensState::Required)
                    .http_put_response_hop_limit(1)
                    .build(),
            )
            .tag_specifications(
                t::LaunchTemplateTagSpecification::builder()
                    .resource_type(t::ResourceType::Instance)
                    .tags(t::Tag::builder().key("Name").value("web").build())
                    .build(),
            )
            .instance_requirements(t::InstanceRequirements::builder().build())
            .build();
        let (request, skipped) = to_request(&response);
        assert_eq!(request.image_id(), Some("ami-1"));
        assert_eq!(request.instance_type(), Some(&t::InstanceType::T3Micro));
        assert_eq!(request.key_name(), Some("ops"));
        assert_eq!(request.user_data(), Some("IyEvYmluL3NoCg=="));
        assert_eq!(request.security_group_ids(), ["sg-1".to_owned()]);
        assert_eq!(
            request.iam_instance_profile().and_then(|p| p.name()),
            Some("web")
        );
        let ebs = request.block_device_mappings()[0].ebs().expect("ebs kept");
        assert_eq!((ebs.volume_size(), ebs.encrypted()), (Some(20), Some(true)));
        let metadata = request.metadata_options().expect("metadata options kept");
        assert_eq!(
            metadata.http_tokens(),
            Some(&t::LaunchTemplateHttpTokensState::Required)
        );
        assert_eq!(
            request.tag_specifications()[0].tags()[0].value(),
            Some("web")
        );
        assert_eq!(skipped, ["InstanceRequirements"]);
    }

    #[test]
    fn empty_lists_stay_unset() {
        let (request, skipped) = to_request(
            &t::ResponseLaunchTemplateData::builder()
                .image_id("ami-1")
                .build(),
        );
        assert!(request.block_device_mappings.is_none());
        assert!(request.security_group_ids.is_none());
        assert!(skipped.is_empty());
    }
}
